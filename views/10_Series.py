"""Series: DICOM series from the PACS and the scanners, each answered as one; scroll its slices with window,
level, zoom and heatmaps, most suspicious first, and see what went back to the PACS."""

import math
from datetime import datetime

import pandas as pd
import streamlit as st

from db.series import SeriesDetail, SliceRow
from domain import CLASSES, AuditAction, TumorClass, framework_label
from services import records
from ui.auth import require
from ui.jobs import job_panel
from ui.series_view import (
    Window,
    colour_scale,
    detail,
    heatmap_over,
    presets,
    series_page,
    slice_rgb,
    slice_values,
    windowed,
    zoomed,
)
from ui.text import literal

PAGE_SIZE = 25
OPEN_KEY = "series_open"
VIEWED_KEY = "series_viewed"
SUSPICIOUS_LISTED = 10
STATUS_TEXT = {
    "receiving": "receiving slices",
    "queued": "being predicted",
    "answered": "answered",
    "failed": "failed (see its job)",
}
SOURCE_TEXT = {"dimse": "listener", "dicomweb": "PACS (WADO-RS)", "upload": "upload"}


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def class_label(value: str | None) -> str:
    return TumorClass(value).label if value in CLASSES else "—"


def series_list() -> None:
    pages = max(1, math.ceil(series_page(limit=PAGE_SIZE, offset=0).total / PAGE_SIZE))
    number = st.session_state.get(f"series_list_page:{pages}", 1)
    page = series_page(limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    if not page.rows:
        st.info(
            "No series yet. Send one to the DICOM listener, pull one on the PACS page, or upload a multi-frame "
            "file or a zip of one series there."
        )
        return
    st.caption(f"{page.total} series; the most recently received first.")
    frame = pd.DataFrame(
        {
            "Received (UTC)": [when(s.last_received_at) for s in page.rows],
            "Patient": [s.patient_mrn or "" for s in page.rows],
            "Series": [s.description or s.series_uid for s in page.rows],
            "Slices": [s.slices for s in page.rows],
            "From": [f"{SOURCE_TEXT.get(s.source, s.source)} {s.sender or ''}".strip() for s in page.rows],
            "Status": [STATUS_TEXT.get(s.status, s.status) for s in page.rows],
            "Answer": [class_label(s.label) if s.status == "answered" else "" for s in page.rows],
            "Confidence": [s.confidence for s in page.rows],
            "Needs review": [bool(s.flagged) if s.flagged is not None else None for s in page.rows],
        }
    )
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={"Confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")},
    )
    if pages > 1:
        st.pagination(pages, key=f"series_list_page:{pages}")
    names = {
        s.series_id: f"{s.patient_mrn or 'no patient'} · {s.description or s.series_uid} · #{s.series_id}"
        for s in page.rows
    }
    st.selectbox(
        "Open a series",
        list(names),
        format_func=names.get,
        index=None,
        placeholder="Choose a series from this page",
        key="series_pick",
        on_change=lambda: st.session_state.update({OPEN_KEY: st.session_state["series_pick"]}),
    )


def seen(series: SeriesDetail) -> None:
    viewed = st.session_state.setdefault(VIEWED_KEY, set())
    target = f"series {series.summary.series_id}"
    if target not in viewed:
        records.viewed(ACTOR, AuditAction.SERIES_VIEWED, target=target, patient_mrn=series.summary.patient_mrn)
        viewed.add(target)


def answer_box(series: SeriesDetail) -> None:
    answer = series.answer
    if series.summary.status != "answered" or answer is None:
        st.info(f"This series is {STATUS_TEXT.get(series.summary.status, series.summary.status)}.")
        return
    if not answer.get("label"):
        st.warning(literal("; ".join(answer.get("reasons") or ["no answer"])))
        return
    left, middle, right = st.columns(3)
    left.metric(
        "Series answer", class_label(answer["label"]), f"{answer['confidence']:.0%} confidence", delta_color="off"
    )
    middle.metric("Slices accepted", f"{answer['accepted']} of {answer['slices']}")
    right.metric("Refused / unreadable", f"{answer['refused']} / {answer.get('errors', 0)}")
    if answer["flagged"]:
        st.warning("Needs review: " + literal("; ".join(answer["reasons"])), icon=":material/flag:")
    per_model = " · ".join(f"{framework_label(fw)}: {class_label(c)}" for fw, c in answer.get("per_model", {}).items())
    probs = " · ".join(f"{class_label(c)} {answer['probabilities'].get(c, 0.0):.0%}" for c in CLASSES)
    st.markdown(f"{probs}  \nEach model alone: {per_model}")
    st.caption(f"Series rule: {literal(answer['rule'])}.")


def sends_box(series: SeriesDetail) -> None:
    if not series.sends:
        if series.summary.status == "answered":
            st.caption(
                "Nothing was sent to the PACS for this series (no destination is configured: DICOM_DESTINATION, "
                "or DICOMWEB_URL with DICOMWEB_STOW)."
            )
        return
    st.subheader("Sent to the PACS")
    st.dataframe(
        pd.DataFrame(
            {
                "What": [s.what for s in series.sends],
                "To": [s.destination for s in series.sends],
                "Status": [s.status for s in series.sends],
                "Attempts": [s.attempts for s in series.sends],
                "Last error": [s.last_error or "" for s in series.sends],
                "Next attempt (UTC)": [when(s.next_attempt_at) for s in series.sends],
                "Sent (UTC)": [when(s.sent_at) for s in series.sends],
                "Job": [s.job_id for s in series.sends],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    for send in series.sends:
        if send.status == "pending" and send.job_id is not None:
            job_panel(send.job_id, key=f"series_send_{send.send_id}")


def ranked(series: SeriesDetail) -> list[SliceRow]:
    """The slices, most suspicious first (by the answer's ranking), then those not accepted, in series order."""
    order = {slice_id: i for i, slice_id in enumerate((series.answer or {}).get("ranking", []))}
    return sorted(series.slices, key=lambda s: (s.slice_id not in order, order.get(s.slice_id, 0), s.number))


def slice_answer(row: SliceRow) -> str:
    if row.status != "done":
        return f"{row.status}: {row.error or ''}".strip(": ")
    return " · ".join(
        f"{framework_label(fw)} {class_label(r['label'])} {r['confidence']:.0%}" for fw, r in row.results.items()
    )


def slice_table(series: SeriesDetail) -> None:
    rows = ranked(series)
    st.dataframe(
        pd.DataFrame(
            {
                "Slice": [r.number for r in rows],
                "Position (mm)": [r.position for r in rows],
                "Status": [r.status for r in rows],
                **{
                    framework_label(fw): [class_label(r.results.get(fw, {}).get("label")) for r in rows]
                    for fw in sorted({fw for r in rows for fw in r.results})
                },
                "No-tumor probability": [
                    min(r.results[fw]["probabilities"]["notumor"] for fw in r.results) if r.results else None
                    for r in rows
                ],
                "Needs review": [r.needs_review for r in rows],
                "Note": [r.error or "" for r in rows],
            }
        ),
        hide_index=True,
        width="stretch",
        height=min(420, 38 + 35 * len(rows)),
    )


def go_to(series_id: int, key: str) -> None:
    st.session_state[f"series_slice_{series_id}"] = st.session_state[key]


def viewer(series: SeriesDetail) -> None:
    series_id, count = series.summary.series_id, len(series.slices)
    if not count:
        st.info("No slice has arrived yet.")
        return
    slider_key = f"series_slice_{series_id}"
    suspicious = [s for s in ranked(series) if s.status == "done"][:SUSPICIOUS_LISTED]
    if suspicious:
        st.selectbox(
            "Most suspicious slices",
            [s.number for s in suspicious],
            format_func=lambda n: f"slice {n}: {slice_answer(series.slices[n - 1])}",
            index=None,
            placeholder="Jump to one of the most suspicious slices",
            key=f"series_jump_{series_id}",
            on_change=go_to,
            args=(series_id, f"series_jump_{series_id}"),
        )
    image_col, controls = st.columns([3, 2])
    # A series opens at its most suspicious slice.
    first = suspicious[0].number if suspicious else 1
    with controls:
        number = st.slider("Slice", 1, count, value=first, key=slider_key) if count > 1 else 1
        row = series.slices[number - 1]
        values = (
            slice_values(row.values_file, row.values_scale or 1.0, row.values_offset or 0.0)
            if row.values_file
            else None
        )
        choices = presets(row, values)
        preset = st.radio("Window / level", [*choices, "Custom"], key=f"series_wl_{series_id}", horizontal=True)
        if preset == "Custom":
            first = next(iter(choices.values()))
            center = st.number_input("Level (center)", value=float(first.center), key=f"series_c_{series_id}")
            width = st.number_input(
                "Window (width)", value=float(first.width), min_value=1e-3, key=f"series_w_{series_id}"
            )
            window = Window(center, width)
        else:
            window = choices[preset]
        zoom = st.select_slider(
            "Zoom",
            [1.0, 1.5, 2.0, 3.0, 4.0],
            value=1.0,
            format_func=lambda z: f"{z:g}x",
            key=f"series_zoom_{series_id}",
        )
        across = st.slider("Across", 0.0, 1.0, 0.5, key=f"series_x_{series_id}", disabled=zoom == 1.0)
        down = st.slider("Down", 0.0, 1.0, 0.5, key=f"series_y_{series_id}", disabled=zoom == 1.0)
        frameworks = sorted(row.results)
        show_heat = st.toggle("Heatmap", key=f"series_heat_{series_id}", disabled=not frameworks)
        framework = (
            st.radio(
                "Model", frameworks, format_func=framework_label, key=f"series_heat_model_{series_id}", horizontal=True
            )
            if show_heat and frameworks
            else None
        )
        opacity = (
            st.slider("Heatmap opacity", 0.1, 0.9, 0.45, key=f"series_heat_opacity_{series_id}") if framework else 0.45
        )
        st.markdown(f"**Slice {number} of {count}** · {literal(slice_answer(row))}")
    with image_col:
        base = windowed(values, window) if values is not None else slice_rgb(row.file_path) if row.file_path else None
        if base is None:
            st.warning("This slice has no image: " + literal(row.error or "its scan was deleted."))
            return
        caption = window.label if values is not None else "the stored image (no original values kept)"
        if framework is not None:
            overlay, why = heatmap_over(row, framework, base, opacity)
            if overlay is None:
                st.caption(literal(why))
            else:
                base, caption = overlay, f"{caption} · {framework_label(framework)} heatmap"
        picture, scale = st.columns([12, 1])
        picture.image(zoomed(base, zoom, across, down), caption=caption, width="stretch")
        if framework is not None:
            scale.image(colour_scale(), caption="high to low", width="stretch")


def open_series(series_id: int) -> None:
    series = detail(series_id)
    if series is None:
        st.session_state.pop(OPEN_KEY, None)
        st.info("That series no longer exists.")
        return
    st.divider()
    seen(series)
    summary = series.summary
    st.header(literal(summary.description or "Series") + f" · #{summary.series_id}")
    st.caption(
        f"Patient {literal(summary.patient_mrn or 'not named')} · study date {literal(summary.study_date or 'not given')} · "
        f"{summary.slices} slice(s) · from the {SOURCE_TEXT.get(summary.source, summary.source)} "
        f"{literal(summary.sender or '')} · last received {when(summary.last_received_at)} UTC"
    )
    if summary.job_id is not None and summary.status in ("queued", "failed"):
        job_panel(summary.job_id, key=f"series_job_{summary.series_id}")
    answer_box(series)
    viewer(series)
    with st.expander(f"Each slice's answer ({len(series.slices)}), most suspicious first"):
        slice_table(series)
    sends_box(series)


ACTOR = require()
st.title("Series")
# ?series=12 (from History) opens that series once; the reader may then move on.
if (linked := st.query_params.get("series")) and st.session_state.get("series_link") != linked:
    st.session_state["series_link"] = linked
    if linked.isdigit():
        st.session_state[OPEN_KEY] = int(linked)
series_list()
if (open_id := st.session_state.get(OPEN_KEY)) is not None:
    open_series(open_id)
