"""A scan's read on a page: the models' answers as evidence, the reads so far, and the form for a new read.

Every widget is keyed by the scan's id, so a form left open after a save is the next scan's, never a neighbour's
that happened to stand at the same place.
"""

from datetime import datetime

import streamlit as st

from db.history import ScanEntry
from db.reads import MAX_NOTE_CHARS, ReadError, ReadRow
from domain import CLASSES, READ_LABELS, ReadLabel, TumorClass, framework_label
from services import reads
from services.auth import Actor
from services.reports import scan_answer
from ui.text import literal


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def answers(entry: ScanEntry) -> None:
    """What each model answered, marked as evidence for the read; or why there is no answer."""
    if entry.refusal:
        st.warning(
            f"The brain-MRI check refused this image: {literal(entry.refusal)}. No model answer was kept for it; "
            "read it as a clinician would (or as not assessable).",
            icon=":material/block:",
        )
    combined = scan_answer(entry)
    if combined is not None:
        st.markdown(
            f"The models' one answer: **{TumorClass(combined.label).label}** {combined.confidence:.1%}  \n"
            f":gray[{combined.how}]"
        )
    for p in entry.predictions:
        probs = " · ".join(f"{TumorClass(c).label} {p.probabilities.get(c, 0.0):.0%}" for c in CLASSES)
        flag = " · flagged" if p.needs_review else ""
        st.markdown(
            f"{framework_label(p.framework)} ({literal(p.model_name)}) answered **{TumorClass(p.label).label}** "
            f"{p.confidence:.1%}{flag}  \n:gray[{probs}]"
        )
    if not entry.predictions and not entry.refusal:
        st.caption("No model answer is recorded for this scan.")


def read_history(entry: ScanEntry) -> None:
    """The scan's current read, and the reads it superseded (newest first)."""
    current = entry.current_read
    if current is None:
        st.markdown("**Not read yet**: no clinician has given this scan a final class.")
        return
    st.markdown(f"**Read: {current.label_text}** by {_signed(current)}")
    for earlier in reversed(entry.reads[:-1]):
        st.caption(f"Superseded: {earlier.label_text} by {_signed(earlier)}")
    migrated = {r.label for r in entry.reads if r.migrated}
    if len(migrated) > 1 and all(r.migrated for r in entry.reads):
        st.warning(
            "The reviews of this scan's two model answers disagreed before reads existed: both are kept above. "
            "A new read settles it."
        )


def _signed(read: ReadRow) -> str:
    note = f": “{literal(read.note)}”" if read.note else ""
    source = " (a review of one model's answer, from before reads)" if read.migrated else ""
    return f"{literal(read.read_by)}, {when(read.read_at)} UTC{source}{note}"


def read_form(actor: Actor, entry: ScanEntry, *, key: str, submit: str) -> ReadRow | None:
    """The form for a new read of `entry`; the saved read once submitted and saved, else None."""
    said: dict[str, list[str]] = {}
    for p in entry.predictions:
        said.setdefault(p.label, []).append(f"{framework_label(p.framework)} {p.confidence:.0%}")

    def option(value: str) -> str:
        text = ReadLabel(value).label
        return f"{text} (the answer of {', '.join(said[value])})" if value in said else text

    with st.form(key=f"{key}_form_{entry.scan_id}", border=False):
        label = st.radio(
            "Final class",
            READ_LABELS,
            index=None,
            format_func=option,
            key=f"{key}_label_{entry.scan_id}",
            help="Confirm the models' answer, choose another class, or say the image cannot be assessed.",
        )
        note = st.text_area("Note", max_chars=MAX_NOTE_CHARS, key=f"{key}_note_{entry.scan_id}")
        st.caption(
            f"Signed as {literal(actor.username)}. A new read supersedes earlier ones, which stay in the record."
        )
        submitted = st.form_submit_button(submit, type="primary", key=f"{key}_save_{entry.scan_id}")
    if not submitted:
        return None
    try:
        return reads.read_scan(actor, scan_id=entry.scan_id, label=label, note=note)
    except ReadError as exc:
        st.error(literal(exc))
        return None
