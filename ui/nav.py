"""Links between the app's pages."""

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError


def link_to_page(page: str, *, label: str, query_params: dict[str, str] | None = None, icon: str | None = None) -> None:
    """A link to another page of the app; when that page is not part of this app, its name as plain text."""
    try:
        st.page_link(page, label=label, query_params=query_params, icon=icon)
    except StreamlitPageNotFoundError:
        # A page run on its own (tests, a single-page deployment) has no sibling pages to link to.
        st.markdown(f"{label} (page `{page}`)")
