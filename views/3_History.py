"""History: every patient's scans over time with the models' answers and the clinicians' reads; read, export,
merge and delete them."""

import math
from collections.abc import Callable
from datetime import date

import pandas as pd
import streamlit as st

from db.deletion import Removal
from db.history import PagedRows, PatientTimeline, PredictionFilters, PredictionRow, ScanEntry
from db.schema import CLASSES
from domain import AuditAction, ReadLabel, TumorClass, UserError
from ui import history_view, read_panel
from ui.audited import list_shown
from ui.auth import require
from ui.nav import pages
from ui.series_view import series_entries, series_heading
from ui.text import literal

PATIENT_PAGE_SIZE = 25
SCAN_PAGE_SIZE = 10
PAGE_SIZES = (25, 50, 100, 200)
OPEN_KEY = "history_patient_id"  # the patient whose record is open below the lists
CONFIRM_KEY = "history_confirm"  # ("scan" | "patient", id) waiting for a confirmation
FLASH_KEY = "history_flash"
SEARCH_OPENED_KEY = "history_search_opened"  # the search text that last opened a record by its exact id
ANY = "any"
when = read_panel.when


def after_write(message: str) -> None:
    """Show `message` on the next run and redraw from fresh data."""
    st.session_state[FLASH_KEY] = message
    for key in [k for k in st.session_state if str(k).startswith("history_report_html_")]:
        del st.session_state[key]  # a prepared report no longer matches the record
    st.rerun()


def paged(key: str, limit: int, fetch: Callable[[int], PagedRows]) -> PagedRows:
    """The page of rows a pagination widget points at, and that widget.

    `key` names what is paged (include the search or filters in it), and the number of pages joins it:
    new filters, or rows deleted from under the reader, start again at page 1.
    """
    first = fetch(0)
    pages = max(1, math.ceil(first.total / limit))
    widget_key = f"{key}:{pages}"
    number = st.session_state.get(widget_key, 1)
    page = first if number == 1 else fetch((number - 1) * limit)
    if pages > 1:
        st.pagination(pages, key=widget_key)
    return page


def patient_list() -> None:
    search = st.text_input(
        "Search patient id",
        key="history_search",
        placeholder="Any part of the id; the whole id opens the record",
        help="Case and spaces around the id do not matter: mrn-4711 finds MRN-4711.",
    ).strip()
    # The whole id, however it is cased, opens that patient's record (once: the reader may then move on).
    if (
        search
        and st.session_state.get(SEARCH_OPENED_KEY) != search
        and (exact := history_view.patient_id_for(search)) is not None
    ):
        st.session_state[OPEN_KEY] = exact
        st.session_state[SEARCH_OPENED_KEY] = search
    page = paged(
        f"history_patients_page:{search}",
        PATIENT_PAGE_SIZE,
        lambda offset: history_view.patients(search=search, limit=PATIENT_PAGE_SIZE, offset=offset),
    )
    if not page.rows:
        st.info("No patient matches this search." if search.strip() else "No patient has a saved scan yet.")
        return
    st.caption(f"{page.total} patient(s); most recently scanned first.")
    frame = pd.DataFrame(
        {
            "Patient id": [p.mrn for p in page.rows],
            "Scans": [p.n_scans for p in page.rows],
            "Last scan (UTC)": [when(p.last_scan_at) for p in page.rows],
            "Last result": [
                (p.last_result or "")
                + (" (read)" if p.last_result_read else " (models, not read)" * bool(p.last_result))
                for p in page.rows
            ],
            "Awaiting a read": [p.awaiting_read for p in page.rows],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    open_picker({p.patient_pk: p.mrn for p in page.rows}, key="history_open_select")


def open_picker(names: dict[int, str], *, key: str) -> None:
    """A box that opens the record of one of the patients listed on this page."""
    st.selectbox(
        "Open a patient's record",
        list(names),
        format_func=names.get,
        index=None,
        placeholder="Choose a patient from this page",
        key=key,
        on_change=lambda: st.session_state.update({OPEN_KEY: st.session_state[key]}),
    )


def prediction_filters() -> PredictionFilters:
    top = st.columns(4)
    labels = top[0].multiselect(
        "Model's answer", CLASSES, format_func=lambda c: TumorClass(c).label, key="history_f_labels"
    )
    flagged = top[1].selectbox("Flagged for review", (ANY, "yes", "no"), key="history_f_flagged")
    read = top[2].selectbox("Scan read", (ANY, "yes", "no"), key="history_f_read")
    source = top[3].selectbox("Source", (ANY, "upload", "batch"), key="history_f_source")
    bottom = st.columns(3)
    dates: tuple[date, ...] = bottom[0].date_input("Date range (UTC)", value=[], key="history_f_dates")
    versions = history_view.model_versions()
    version_ids = bottom[1].multiselect(
        "Model version", list(versions), format_func=versions.get, key="history_f_versions"
    )
    patient = bottom[2].text_input("Patient id contains", key="history_f_patient")
    choice = {ANY: None, "yes": True, "no": False}
    return PredictionFilters(
        labels=tuple(labels),
        needs_review=choice[flagged],
        read=choice[read],
        date_from=dates[0] if len(dates) > 0 else None,
        date_to=dates[1] if len(dates) > 1 else None,
        model_version_ids=tuple(version_ids),
        source=None if source == ANY else source,
        patient=patient.strip() or None,
    )


def prediction_frame(rows: list[PredictionRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "When (UTC)": [when(r.created_at) for r in rows],
            "Patient": [r.patient_mrn or "" for r in rows],
            "Scan": [r.scan_id for r in rows],
            "File": [r.original_name for r in rows],
            "Model": [f"{r.model_name} ({r.framework})" for r in rows],
            "Model's answer": [TumorClass(r.label).label for r in rows],
            "Confidence": [r.confidence for r in rows],
            "Flagged": [r.needs_review for r in rows],
            # The scan's read, by a clinician: empty until there is one.
            "Read": [ReadLabel(r.read_label).label if r.read_label else "" for r in rows],
            "Read by": [r.read_by or "" for r in rows],
            "Read at (UTC)": [when(r.read_at) for r in rows],
        }
    )


def prediction_browser() -> None:
    filters = prediction_filters()
    size = st.selectbox("Rows per page", PAGE_SIZES, key="history_page_size")
    page = paged(
        f"history_predictions_page:{hash(filters)}:{size}",
        size,
        lambda offset: history_view.predictions(filters=filters, limit=size, offset=offset),
    )
    st.caption(f"{page.total} prediction(s) match; newest first.")
    number = page.offset // page.limit + 1 if page.limit else 1
    list_shown(
        ACTOR, "every patient's predictions", filters=filters, page=number, shown=len(page.rows), total=page.total
    )
    if page.rows:
        st.dataframe(
            prediction_frame(page.rows),
            hide_index=True,
            width="stretch",
            column_config={
                "Confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")
            },
        )
        st.download_button(
            f"Download these {page.total} predictions (CSV)",
            data=lambda: history_view.filtered_csv(ACTOR, filters),
            file_name=f"predictions-{date.today():%Y%m%d}.csv",
            mime="text/csv",
            key="history_csv",
            on_click="ignore",
        )
        names = {r.patient_pk: r.patient_mrn for r in page.rows if r.patient_pk is not None and r.patient_mrn}
        if names:
            open_picker(names, key="history_open_from_predictions")


def confirm(key: str, button: str, question: str, yes: str, action: Callable[[], str]) -> None:
    """A button that asks first; `action` does the deletion (or merge) and returns what to tell the user."""
    if st.button(button, key=f"history_{key}"):
        st.session_state[CONFIRM_KEY] = key
    if st.session_state.get(CONFIRM_KEY) != key:
        return
    st.warning(question)
    left, right = st.columns(2)
    if left.button(yes, key=f"history_{key}_yes", type="primary"):
        del st.session_state[CONFIRM_KEY]
        try:
            after_write(action())
        except UserError as exc:
            st.error(literal(exc))
    if right.button("Cancel", key=f"history_{key}_no"):
        del st.session_state[CONFIRM_KEY]
        st.rerun()


def seen(action: str, target: str, mrn: str | None) -> None:
    history_view.seen(ACTOR, action, target=target, mrn=mrn)


def scan_card(scan: ScanEntry, mrn: str) -> None:
    heatmap_key = f"history_heatmaps_{scan.scan_id}"
    with st.container(border=True):
        left, right = st.columns([1, 3])
        png = history_view.thumbnail(scan.file_path)
        if png is None:
            left.warning("The image file is missing.")
        else:
            left.image(png, caption=scan.original_name, width="stretch")
        if left.button("Show heatmap", key=f"history_heatmap_{scan.scan_id}", disabled=not scan.predictions):
            seen(AuditAction.SCAN_VIEWED, f"scan {scan.scan_id}", mrn)
            with st.spinner("Computing heatmaps…"):
                st.session_state[heatmap_key] = [history_view.heatmap(scan, p) for p in scan.predictions]
        with right:
            where = f"batch job {scan.job_id}" if scan.job_id else scan.source
            st.markdown(
                f"**Scan #{scan.scan_id}** · {when(history_view.scan_date(scan))} · {where} · "
                f"{scan.image_format} {scan.width}×{scan.height}"
            )
            if scan.note:
                st.caption(literal(scan.note))
            read_panel.read_history(scan)
            read_panel.answers(scan)
        maps = st.session_state.get(heatmap_key, [])
        for column, result in zip(st.columns(max(1, len(maps))), maps):
            if result.overlay is None:
                column.error(f"{result.model_name}: {result.error}")
            else:
                column.image(result.overlay, caption=f"{result.method} heatmap: {result.model_name}", width="stretch")
        with st.expander("Read this scan" if scan.current_read is None else "Read this scan again"):
            if saved := read_panel.read_form(ACTOR, scan, key="history_read", submit="Save read"):
                history_view.clear_cache()
                after_write(f"Read saved: scan #{scan.scan_id} read as {saved.label_text}.")
        if not ACTOR.is_admin:
            return
        kept = " Its image file stays: another patient's scan uses it." if scan.file_shared else ""
        confirm(
            f"delete_scan_{scan.scan_id}",
            "Delete scan…",
            f"Delete scan #{scan.scan_id} ({literal(scan.original_name)}), its {len(scan.predictions)} prediction(s) "
            f"and {len(scan.reads)} read(s), also from batch job results? "
            f"This cannot be undone.{kept}",
            "Yes, delete the scan",
            lambda: removal_sentence(history_view.remove_scan(ACTOR, scan_id=scan.scan_id), f"Scan #{scan.scan_id}"),
        )


def removal_sentence(removal: Removal, what: str) -> str:
    return (
        f"{what} deleted: {removal.scans} scan(s), {removal.predictions} prediction(s), {removal.reads} read(s), "
        f"{len(removal.files)} stored file(s)."
    )


def delete_patient(record: PatientTimeline) -> str:
    removal = history_view.remove_patient(ACTOR, patient_pk=record.patient_pk, mrn=record.mrn)
    st.session_state.pop(OPEN_KEY, None)
    return removal_sentence(removal, f"Patient {literal(record.mrn)}")


def report_controls(record: PatientTimeline) -> None:
    key = f"history_report_html_{record.patient_pk}"
    with_heatmaps = st.checkbox("Include heatmaps (slower)", key=f"history_report_heatmaps_{record.patient_pk}")
    if st.button("Prepare report", key=f"history_report_{record.patient_pk}"):
        with st.spinner("Writing the report…"):
            st.session_state[key] = history_view.report_html(
                ACTOR, patient_pk=record.patient_pk, with_heatmaps=with_heatmaps
            )
    if st.session_state.get(key):
        st.download_button(
            "Download report (HTML)",
            data=st.session_state[key].encode("utf-8"),
            file_name=f"brain-mri-report-{record.mrn}-{date.today():%Y%m%d}.html",
            mime="text/html",
            key=f"history_report_download_{record.patient_pk}",
            on_click="ignore",
        )


def merge_controls(record: PatientTimeline) -> None:
    """An admin merges another patient (a twin under the same id, in other case) into this one."""
    twins, others = history_view.merge_candidates(record.patient_pk)
    if not twins and not others:
        return
    with st.expander("Merge another patient into this one", expanded=bool(twins)):
        if twins:
            st.warning(
                f"{len(twins)} other patient(s) have this id but for case or spaces: "
                + ", ".join(literal(mrn) for mrn in twins.values())
                + ". Merge them if they are the same person."
            )
        names = {**twins, **others}
        chosen = st.selectbox(
            "Patient to merge into this one",
            list(names),
            format_func=names.get,
            index=0 if twins else None,
            placeholder="Choose a patient",
            key=f"history_merge_pick_{record.patient_pk}",
        )
        if chosen is None:
            return
        confirm(
            f"merge_{record.patient_pk}_{chosen}",
            "Merge…",
            f"Merge patient {literal(names[chosen])} into {literal(record.mrn)}? Their scans, model answers and "
            f"reads move to {literal(record.mrn)}, and {literal(names[chosen])} is deleted. This cannot be undone.",
            "Yes, merge the patients",
            lambda: merged(record, chosen, names[chosen]),
        )


def merged(record: PatientTimeline, twin_pk: int, twin_mrn: str) -> str:
    moved = history_view.merge(ACTOR, keep=(record.patient_pk, record.mrn), twin=(twin_pk, twin_mrn))
    return (
        f"Patient {literal(twin_mrn)} merged into {literal(record.mrn)}: {moved.scans} scan(s) moved "
        f"({moved.joined} joined to a scan of the same image), {moved.predictions} model answer(s), "
        f"{moved.reads} read(s)."
    )


def patient_record(patient_pk: int) -> None:
    record = history_view.timeline(patient_pk=patient_pk)
    if record is None:
        st.session_state.pop(OPEN_KEY, None)
        st.info("That patient's record no longer exists.")
        return
    st.divider()
    seen(AuditAction.PATIENT_VIEWED, f"patient {record.patient_pk}", record.mrn)
    st.header(f"Patient {literal(record.mrn)}")
    predictions = [p for scan in record.scans for p in scan.predictions]
    counts = st.columns(4)
    counts[0].metric("Scans", len(record.scans))
    counts[1].metric("Model answers", len(predictions))
    counts[2].metric("Read", sum(scan.current_read is not None for scan in record.scans))
    counts[3].metric("Awaiting a read", sum(scan.current_read is None for scan in record.scans))
    actions = st.columns(2)
    with actions[0]:
        report_controls(record)
    if ACTOR.is_admin:
        with actions[1]:
            confirm(
                f"delete_patient_{record.patient_pk}",
                "Delete patient…",
                f"Delete patient {literal(record.mrn)} with all {len(record.scans)} scan(s), {len(predictions)} "
                f"prediction(s) and their reads, and their rows in batch job results? Image files another patient's "
                "scan uses are kept. This cannot be undone.",
                "Yes, delete the patient",
                lambda: delete_patient(record),
            )
            merge_controls(record)
    if not record.scans:
        st.info("This patient has no scans.")
        return
    st.plotly_chart(history_view.timeline_chart(record), key=f"history_timeline_{record.patient_pk}")
    # A DICOM series is one entry, its slices beneath it.
    entries = series_entries(list(reversed(record.scans)))
    page = paged(
        f"history_scans_page_{record.patient_pk}",
        SCAN_PAGE_SIZE,
        lambda offset: PagedRows(entries[offset : offset + SCAN_PAGE_SIZE], len(entries), SCAN_PAGE_SIZE, offset),
    )
    for series, scans in page.rows:
        if series is None:
            scan_card(scans[0], record.mrn)
            continue
        with st.container(border=True):
            st.markdown(series_heading(series))
            st.page_link(pages().series, label="Open the series", query_params={"series": str(series.series_id)})
            with st.expander(f"Its {len(scans)} slice(s)"):
                for scan in scans:
                    scan_card(scan, record.mrn)


ACTOR = require()
st.title("History")
if message := st.session_state.pop(FLASH_KEY, None):
    st.success(message)
# A link such as ?patient=P-001 (from the Diagnose page) opens that record once; the reader may then move on.
if (mrn := st.query_params.get("patient")) and st.session_state.get("history_link") != mrn:
    st.session_state["history_link"] = mrn
    if (linked := history_view.patient_id_for(mrn)) is None:
        st.warning(f"No patient has the id {literal(mrn)}.")
    else:
        st.session_state[OPEN_KEY] = linked
patients_tab, predictions_tab = st.tabs(["Patients", "All predictions"])
with patients_tab:
    patient_list()
with predictions_tab:
    prediction_browser()
if (open_id := st.session_state.get(OPEN_KEY)) is not None:
    patient_record(open_id)
