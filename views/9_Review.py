"""Review queue: every scan awaiting a clinician's read, flagged ones first; read one case after another."""

from datetime import date

import pandas as pd
import streamlit as st

from db.history import ScanEntry
from db.jobs import recent_jobs
from db.session import read_scope
from db.worklist import QueueEntry, QueueFilters
from domain import AuditAction, FlagReason, UserError
from services import reads
from services.batch_input import source_label
from ui import history_view, read_panel
from ui.auth import require
from ui.nav import pages
from ui.patients import patient_picker
from ui.text import literal

CASE_KEY = "review_case"  # the scan id of the case open below the queue
LINK_KEY = "review_link"  # the ?scan= value already followed, so that the reader may move on from it
PINNED_KEY = "review_pinned"  # a scan opened by a link or an assignment: shown even when the queue lacks it
FLASH_KEY = "review_flash"
ANY, FLAGGED = "any", "flagged"
REASONS = {ANY: "any", FLAGGED: "any flag", **{reason.value: reason.label for reason in FlagReason}}
JOBS_LISTED = 50
LISTED = 200  # rows of the queue shown in its table
IMAGE_SIDE = 512


def batch_jobs() -> dict[int, str]:
    with read_scope() as session:
        return {
            job.id: f"Job {job.id} · {job.created_at:%Y-%m-%d %H:%M} UTC · {source_label(job.params or {})}"
            for job in recent_jobs(session=session, limit=JOBS_LISTED, kind="batch")
        }


def filters() -> QueueFilters:
    jobs = batch_jobs()
    linked = st.query_params.get("job", "")
    if "review_f_job" not in st.session_state and linked.isdigit() and int(linked) in jobs:
        st.session_state["review_f_job"] = int(linked)  # a link from a batch's results
    top = st.columns(3)
    reason = top[0].selectbox("Reason", list(REASONS), format_func=REASONS.get, key="review_f_reason")
    job = top[1].selectbox(
        "Batch job", [None, *jobs], format_func=lambda j: "any" if j is None else jobs[j], key="review_f_job"
    )
    dates: tuple[date, ...] = top[2].date_input("Stored between (UTC)", value=[], key="review_f_dates")
    bottom = st.columns([2, 1], vertical_alignment="bottom")
    patient = bottom[0].text_input("Patient id contains", key="review_f_patient")
    anonymous = bottom[1].checkbox("Only scans without a patient", key="review_f_anonymous")
    try:
        return QueueFilters(
            job_id=job,
            patient=patient.strip() or None,
            without_patient=anonymous,
            date_from=dates[0] if len(dates) > 0 else None,
            date_to=dates[1] if len(dates) > 1 else None,
            reason=None if reason == ANY else reason,
        )
    except ValueError as exc:
        st.error(str(exc))
        st.stop()


def show_counts(chosen: QueueFilters) -> None:
    """Counts per state under the filters (whatever reason is chosen)."""
    counts = reads.counts(filters=QueueFilters(**{**chosen.__dict__, "reason": None}))
    columns = st.columns(4)
    columns[0].metric("Awaiting a read", counts.awaiting)
    columns[1].metric("Flagged", counts.flagged)
    columns[2].metric("Without a patient", counts.without_patient)
    columns[3].metric("Read", counts.read)
    flagged = [f"{counts.by_reason[r.value]} {r.label}" for r in FlagReason if r != FlagReason.NONE]
    st.caption("Flagged: " + " · ".join(flagged) + f" · then {counts.by_reason[FlagReason.NONE]} not flagged.")


def queue_table(entries: list[QueueEntry], current: int) -> None:
    with st.expander(f"The queue ({len(entries)} scan(s), in the order they come)"):
        shown = entries[:LISTED]
        st.dataframe(
            pd.DataFrame(
                {
                    "": ["▶" if e.scan_id == current else "" for e in shown],
                    "Scan": [e.scan_id for e in shown],
                    "Why": [FlagReason(e.reason).label for e in shown],
                    "Patient": [e.patient_mrn or "none yet" for e in shown],
                    "Batch job": [e.job_id for e in shown],
                    "File": [e.original_name for e in shown],
                    "Stored (UTC)": [read_panel.when(e.created_at) for e in shown],
                }
            ),
            hide_index=True,
            key="review_queue_table",
        )
        if len(entries) > LISTED:
            st.caption(f"…and {len(entries) - LISTED} more.")


def current_case(ids: list[int]) -> int | None:
    """The case to show: a linked scan (once), the one open while the queue holds it, or the queue's first."""
    linked = st.query_params.get("scan", "")
    if linked.isdigit() and st.session_state.get(LINK_KEY) != linked:
        open_case(int(linked), pin=True)
    case = st.session_state.get(CASE_KEY)
    if case is None or (case not in ids and case != st.session_state.get(PINNED_KEY)):
        # Read by someone else meanwhile, or left out by new filters: the queue goes on.
        open_case(ids[0] if ids else None)
    return st.session_state.get(CASE_KEY)


def open_case(scan_id: int | None, *, pin: bool = False) -> None:
    """Show `scan_id` next; the address bar follows, so a reload opens the same case."""
    st.session_state[CASE_KEY] = scan_id
    st.session_state[PINNED_KEY] = scan_id if pin else None
    if scan_id is None:
        st.query_params.pop("scan", None)
        return
    st.query_params["scan"] = str(scan_id)
    st.session_state[LINK_KEY] = str(scan_id)


def following(ids: list[int], scan_id: int) -> int | None:
    """The case after `scan_id` in the queue's order (wrapping round), or the first when it is not in it."""
    if scan_id not in ids:
        return ids[0] if ids else None
    position = ids.index(scan_id)
    rest = ids[position + 1 :] + ids[:position]
    return rest[0] if rest else None


def images(entry: ScanEntry) -> None:
    png = history_view.thumbnail(entry.file_path, side=IMAGE_SIDE)
    maps = [history_view.heatmap(entry, p) for p in entry.predictions] if png is not None else []
    columns = st.columns(1 + max(1, len(maps)))
    if png is None:
        columns[0].warning("The image file is missing.")
    else:
        columns[0].image(png, caption=entry.original_name, width="stretch")
    for column, result in zip(columns[1:], maps):
        if result.overlay is None:
            column.error(f"{literal(result.model_name)}: {literal(result.error)}")
        else:
            column.image(result.overlay, caption=f"{result.method} heatmap: {result.model_name}", width="stretch")


def patient_box(entry: ScanEntry) -> None:
    if entry.patient_mrn is not None:
        st.page_link(
            pages().history,
            label=f"Patient {literal(entry.patient_mrn)}: open their history",
            query_params={"patient": entry.patient_mrn},
            icon=":material/person:",
        )
        return
    st.markdown("**No patient yet**: this scan came without a patient id. Assign one:")
    mrn = patient_picker(key=f"review_patient_{entry.scan_id}")
    if st.button("Assign to this patient", key=f"review_assign_{entry.scan_id}", disabled=mrn is None):
        try:
            done = reads.give_patient(ACTOR, scan_id=entry.scan_id, mrn=mrn or "")
        except UserError as exc:
            st.error(literal(exc))
            return
        history_view.clear_cache()
        joined = f" It joined scan #{done.scan_id}, which held the same image." if done.joined else ""
        st.session_state[FLASH_KEY] = f"Scan #{entry.scan_id} now belongs to patient {literal(done.mrn)}.{joined}"
        open_case(done.scan_id, pin=True)
        st.rerun()


def case_view(entry: ScanEntry, queue_entry: QueueEntry | None, ids: list[int]) -> None:
    history_view.seen(ACTOR, AuditAction.SCAN_VIEWED, target=f"scan {entry.scan_id}", mrn=entry.patient_mrn)
    where = f"batch job {entry.job_id}" if entry.job_id else entry.source
    position = f"Case {ids.index(entry.scan_id) + 1} of {len(ids)}" if entry.scan_id in ids else "Not in the queue"
    st.subheader(f"Scan #{entry.scan_id}: {literal(entry.original_name)}")
    st.caption(
        f"{position} · {where} · stored {read_panel.when(entry.created_at)} UTC · "
        f"{entry.image_format} {entry.width}×{entry.height}"
    )
    if queue_entry is not None and queue_entry.flagged:
        st.warning(f"Flagged: {FlagReason(queue_entry.reason).label}.", icon=":material/flag:")
    elif queue_entry is None:
        st.info("This scan is not awaiting a read under these filters; it may have been read already.")
    images(entry)
    left, right = st.columns(2)
    with left:
        read_panel.answers(entry)
        patient_box(entry)
    with right:
        read_panel.read_history(entry)
        saved = read_panel.read_form(ACTOR, entry, key="review_read", submit="Save read and open the next case")
    if saved is not None:
        history_view.clear_cache()
        following_id = following(ids, entry.scan_id)
        st.session_state[FLASH_KEY] = f"Read saved: scan #{entry.scan_id} read as {saved.label_text}."
        open_case(following_id if following_id != entry.scan_id else None)
        st.rerun()


def main() -> None:
    st.title("Review queue")
    st.caption(
        "Every scan awaiting a clinician's read: flagged ones first (refused by the brain-MRI check, models "
        "disagreeing, low confidence), then the rest, the longest waiting first."
    )
    if message := st.session_state.pop(FLASH_KEY, None):
        st.success(message)
    chosen = filters()
    show_counts(chosen)
    entries = reads.queue(filters=chosen)
    ids = [e.scan_id for e in entries]
    scan_id = current_case(ids)
    if scan_id is None:
        st.success("No scan awaits a read under these filters.")
        return
    queue_table(entries, scan_id)
    entry = reads.case(scan_id=scan_id)
    if entry is None:
        st.info(f"Scan #{scan_id} no longer exists; it may have been deleted.")
        open_case(ids[0] if ids else None)
        return
    next_id = following(ids, scan_id)
    st.button(
        "Next case",
        key="review_next",
        disabled=next_id is None or next_id == scan_id,
        on_click=open_case,
        args=(next_id,),
        help="Leave this scan in the queue and open the one after it.",
    )
    case_view(entry, next((e for e in entries if e.scan_id == scan_id), None), ids)


ACTOR = require()
main()
