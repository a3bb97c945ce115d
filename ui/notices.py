"""Notices that outlive a rerun: an action (a button's callback, a step that ends in st.rerun) leaves one, and
the next run of the page, or of the fragment it names, shows it once."""

from typing import Literal

import streamlit as st

Kind = Literal["success", "info", "warning", "error"]
KEY = "notices"  # {place: [(kind, markdown), ...]}
PAGE = "page"


def later(markdown: str, *, kind: Kind = "info", place: str = PAGE) -> None:
    """Show `markdown` at `place` on the next run (escape what a person typed in it: ui.text.literal)."""
    st.session_state.setdefault(KEY, {}).setdefault(place, []).append((kind, markdown))


def show(place: str = PAGE) -> None:
    """Draw, once, the notices left for `place`."""
    for kind, markdown in st.session_state.get(KEY, {}).pop(place, []):
        getattr(st, kind)(markdown)
