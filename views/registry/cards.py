"""Model cards on the Models page: each section, its example images, and its Markdown and HTML exports."""

import streamlit as st

from db.registry import VersionRow
from services import model_card
from services.auth import Actor
from services.model_card_document import ModelCard, escape, section_markdown
from ui import errors, notices


@st.cache_data(ttl=60, max_entries=32, show_spinner="Reading the model card…")
def _card(version: VersionRow, active: VersionRow | None) -> ModelCard:
    # Keyed by the whole rows (registration times included), and by the active one, which the card compares with.
    return model_card.version_card(version_id=version.id)


def find_examples(actor: Actor, version: VersionRow) -> None:
    with st.spinner(f"Predicting the validation images of version {version.id} once…"), errors.shown() as outcome:
        count = model_card.find_confusion_examples(actor, version_id=version.id)
    if outcome.failed:
        return
    _card.clear()
    notices.later(f"Version {version.id}: {count} validation images predicted.", kind="success")
    st.rerun()


def show_card(actor: Actor, version: VersionRow, active: VersionRow | None, place: str) -> None:
    """A version's card, section by section, with its example images and its Markdown and HTML exports."""
    with errors.shown() as outcome:
        card = _card(version, active)
    if outcome.failed:
        return
    st.markdown(f"#### Model card: {escape(card.title)}")
    for section in card.sections:
        st.markdown(section_markdown(section, level=5))
        for group in section.examples:
            shown = [e for e in group.examples if e.thumbnail]
            if shown:
                st.image(
                    [e.thumbnail for e in shown],
                    caption=[f"{e.file} · {100 * e.confidence:.0f} %" for e in shown],
                    width=140,
                )
                st.caption(f"{group.caption}: examples from validation, the most confident first.")
    if card.can_find_examples and st.button(
        "Find example images of the confusions (predicts the validation images once)",
        key=f"models_examples_{place}_{version.id}",
    ):
        find_examples(actor, version)
    stem = f"model-card-{version.framework}-v{version.id}"
    md_col, html_col = st.columns(2)
    md_col.download_button(
        "Download the card (Markdown)",
        data=model_card.card_markdown(card),
        file_name=f"{stem}.md",
        mime="text/markdown",
        key=f"models_card_md_{place}_{version.id}",
    )
    html_col.download_button(
        "Download the card (HTML)",
        data=lambda: model_card.card_html(card),
        file_name=f"{stem}.html",
        mime="text/html",
        key=f"models_card_html_{place}_{version.id}",
    )
