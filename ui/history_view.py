"""The history's data for the page: cached query results, the timeline chart and on-demand heatmaps."""

from datetime import datetime, timedelta

import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import select

from db.deletion import Removal
from db.history import (
    PagedRows,
    PatientSummary,
    PatientTimeline,
    PredictionFilters,
    PredictionRow,
    ScanEntry,
    list_patients,
    list_predictions,
    patient_timeline,
)
from db.patients import Moved, twins
from db.runs import list_model_versions
from db.scans import get_patient
from db.schema import CLASSES, Patient
from db.session import read_scope
from services import records
from services.auth import Actor
from services.reports import Heatmap, first_heatmap, patient_report_html, scan_heatmap, scan_png
from settings import get_settings

# Short enough that another clinician's review shows up soon; long enough that paging does not re-query.
CACHE_TTL_S = 30
CACHE_ENTRIES = 256  # per query function: pages, filters and patients a few readers move between
THUMBNAIL_SIDE = 192
HEATMAP_OPACITY = 0.45
FRAMEWORK_SYMBOLS = {"torch": "circle-open", "keras": "diamond"}
VIEWED_KEY = "history_viewed"  # what this session already recorded as viewed: {"patient 3", "scan 12"}
MAX_MERGE_LISTED = 1000


def _db() -> str:
    # Part of every cache key: results of one database must never be served for another.
    return get_settings().database_url


@st.cache_data(ttl=CACHE_TTL_S, max_entries=CACHE_ENTRIES, show_spinner=False)
def _patients(db: str, search: str, limit: int, offset: int) -> PagedRows[PatientSummary]:
    with read_scope() as session:
        return list_patients(session=session, search=search, limit=limit, offset=offset)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=CACHE_ENTRIES, show_spinner=False)
def _predictions(db: str, filters: PredictionFilters, limit: int, offset: int) -> PagedRows[PredictionRow]:
    with read_scope() as session:
        return list_predictions(session=session, filters=filters, limit=limit, offset=offset)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=CACHE_ENTRIES, show_spinner=False)
def _timeline(db: str, patient_pk: int) -> PatientTimeline | None:
    with read_scope() as session:
        return patient_timeline(session=session, patient_pk=patient_pk)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=CACHE_ENTRIES, show_spinner=False)
def _model_versions(db: str) -> dict[int, str]:
    with read_scope() as session:
        return {v.id: f"{v.name} ({v.framework}, #{v.id})" for v in list_model_versions(session=session)}


def patients(*, search: str, limit: int, offset: int) -> PagedRows[PatientSummary]:
    return _patients(_db(), search.strip(), limit, offset)


def predictions(*, filters: PredictionFilters, limit: int, offset: int) -> PagedRows[PredictionRow]:
    return _predictions(_db(), filters, limit, offset)


def timeline(*, patient_pk: int) -> PatientTimeline | None:
    return _timeline(_db(), patient_pk)


def patient_id_for(mrn: str) -> int | None:
    """The record a patient id opens, matched whatever its case and surrounding spaces."""
    with read_scope() as session:
        patient = get_patient(session=session, mrn=mrn)
        return patient.id if patient else None


def model_versions() -> dict[int, str]:
    """Every registered model version: id -> a readable name."""
    return _model_versions(_db())


def clear_cache() -> None:
    """Forget cached results after a write, so the page shows the change at once."""
    for cached in (_patients, _predictions, _timeline, _model_versions):
        cached.clear()


@st.cache_data(ttl=3600, max_entries=1024, show_spinner=False)
def thumbnail(file_path: str, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A scan's thumbnail; files are addressed by their content, so a path's picture never changes
    (though a missing file may come back when the same image is uploaded again, hence the ttl)."""
    return scan_png(file_path, max_side=side)


def filtered_csv(actor: Actor, filters: PredictionFilters) -> bytes:
    """Every prediction the filters match, as CSV (the export is audited)."""
    return records.export_predictions(actor, filters=filters)


def seen(actor: Actor, action: str, *, target: str, mrn: str | None) -> None:
    """Audit a record or scan shown to this session, once (redraws are not new views)."""
    viewed = st.session_state.setdefault(VIEWED_KEY, set())
    if target not in viewed:
        records.viewed(actor, action, target=target, patient_mrn=mrn)
        viewed.add(target)


def merge_candidates(patient_pk: int) -> tuple[dict[int, str], dict[int, str]]:
    """Patients that could be merged into this one: its twins (the same id but for case or spaces), then the
    others (the first MAX_MERGE_LISTED by id); each as id -> patient id."""
    with read_scope() as session:
        patient = session.get(Patient, patient_pk)
        if patient is None:
            return {}, {}
        twin_ids = {p.id: p.mrn for p in twins(session=session, patient=patient)}
        others = session.execute(
            select(Patient.id, Patient.mrn)
            .where(Patient.id != patient_pk)
            .order_by(Patient.mrn)
            .limit(MAX_MERGE_LISTED)
        ).all()
    return twin_ids, {pid: mrn for pid, mrn in others if pid not in twin_ids}


def merge(actor: Actor, *, keep: tuple[int, str], twin: tuple[int, str]) -> Moved:
    moved = records.merge(actor, keep=keep, twin=twin)
    clear_cache()
    return moved


def remove_scan(actor: Actor, *, scan_id: int) -> Removal:
    removal = records.remove_scan(actor, scan_id=scan_id)
    clear_cache()
    return removal


def remove_patient(actor: Actor, *, patient_pk: int, mrn: str) -> Removal:
    removal = records.remove_patient(actor, patient_pk=patient_pk, mrn=mrn)
    clear_cache()
    return removal


def scan_date(scan: ScanEntry) -> datetime:
    """When the scan was taken if its DICOM header says so, else when it was stored."""
    # Stored as YYYY-MM-DD when the header held a proper DICOM date, else as the header wrote it.
    for layout in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(scan.study_date or "", layout)
        except ValueError:
            continue
    return scan.created_at


def timeline_chart(timeline: PatientTimeline) -> go.Figure:
    """Each model's predicted class per scan over time; colour is the model's confidence."""
    fig = go.Figure()
    frameworks = sorted({p.framework for scan in timeline.scans for p in scan.predictions})
    for framework in frameworks:
        points = [(scan, p) for scan in timeline.scans for p in scan.predictions if p.framework == framework]
        fig.add_trace(
            go.Scatter(
                x=[scan_date(scan) for scan, _ in points],
                y=[p.label for _, p in points],
                mode="markers",
                name=framework,
                marker={
                    "symbol": FRAMEWORK_SYMBOLS.get(framework, "square"),
                    "size": 16 if FRAMEWORK_SYMBOLS.get(framework) == "circle-open" else 10,
                    "line": {"width": 2},
                    "color": [p.confidence for _, p in points],
                    "coloraxis": "coloraxis",
                },
                customdata=[
                    (
                        scan.scan_id,
                        scan.original_name,
                        p.model_name,
                        p.confidence,
                        scan.current_read.label_text if scan.current_read else "not read yet",
                    )
                    for scan, p in points
                ],
                hovertemplate=(
                    "scan #%{customdata[0]} %{customdata[1]}<br>%{customdata[2]}: %{y} "
                    "(%{customdata[3]:.1%})<br>read: %{customdata[4]}<extra></extra>"
                ),
            )
        )
    dates = [scan_date(scan) for scan in timeline.scans]
    xaxis: dict = {"type": "date", "tickformat": "%Y-%m-%d"}
    if dates and max(dates) - min(dates) < timedelta(days=2):
        # A single day would otherwise be stretched over the axis, with ticks a millisecond apart.
        xaxis["range"] = [min(dates) - timedelta(days=3), max(dates) + timedelta(days=3)]
    fig.update_layout(
        xaxis=xaxis,
        height=300,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"categoryorder": "array", "categoryarray": list(CLASSES), "type": "category", "range": [-0.5, 3.5]},
        coloraxis={"colorscale": "RdYlGn", "cmin": 0.25, "cmax": 1.0, "colorbar": {"title": "confidence"}},
        legend={"orientation": "h", "y": 1.15},
        title="The models' answer per scan",
    )
    return fig


def heatmap(scan: ScanEntry, prediction: PredictionRow) -> Heatmap:
    """The heatmap of the model behind `prediction` over the stored scan, or why it could not be computed."""
    # Imported here: loading a model pulls in a deep-learning framework, which browsing never needs.
    from ui.predictors import heatmap

    return scan_heatmap(
        scan, prediction, heatmap=heatmap, max_pixels=get_settings().max_image_pixels, opacity=HEATMAP_OPACITY
    )


def report_html(actor: Actor, *, patient_pk: int, with_heatmaps: bool) -> str | None:
    """The patient's report (audited); each scan's heatmap comes from the first of its models that can compute one."""
    data = timeline(patient_pk=patient_pk)
    if data is None:
        return None
    return records.export_report(
        actor,
        patient_pk=patient_pk,
        mrn=data.mrn,
        write=lambda: patient_report_html(
            timeline=data, heatmap=(lambda scan: first_heatmap(scan, heatmap)) if with_heatmaps else None
        ),
    )
