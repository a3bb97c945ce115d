"""The series page's data and pictures: cached reads, window and level on a slice's own pixel values, zoom,
and the heatmap overlay with its colour scale."""

from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image

from db.history import PagedRows, ScanEntry
from db.runs import get_model_version
from db.series import (
    SeriesDetail,
    SeriesSummary,
    SliceRow,
    list_series,
    series_detail,
    series_of_scans,
    series_summary,
)
from db.session import read_scope
from domain import CLASSES, TumorClass, framework_label
from models.data.imaging import analysis_rgb, decode_image, jet_colormap, make_overlay
from services.series import read_values
from settings import get_settings
from ui.text import literal

CACHE_TTL_S = 5  # a series being answered changes from one second to the next
DISPLAY_SIDE = 512


@dataclass(frozen=True)
class Window:
    """Window and level: the values from center - width/2 to center + width/2 span black to white."""

    center: float
    width: float

    @property
    def label(self) -> str:
        return f"C {self.center:g} / W {self.width:g}"


def _db() -> str:
    return get_settings().database_url


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def _list(db: str, limit: int, offset: int) -> PagedRows[SeriesSummary]:
    with read_scope() as session:
        return list_series(session=session, limit=limit, offset=offset)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def _detail(db: str, series_id: int) -> SeriesDetail | None:
    with read_scope() as session:
        return series_detail(session=session, series_id=series_id)


def series_page(*, limit: int, offset: int) -> PagedRows[SeriesSummary]:
    return _list(_db(), limit, offset)


def detail(series_id: int) -> SeriesDetail | None:
    return _detail(_db(), series_id)


@st.cache_data(ttl=3600, max_entries=96, show_spinner=False)
def slice_rgb(file_path: str) -> np.ndarray | None:
    """The stored scan at analysis size (what the models saw), or None when its file is gone."""
    try:
        with open(file_path, "rb") as handle:
            data = handle.read()
        return analysis_rgb(
            decode_image(data, file_path, max_bytes=len(data), max_pixels=get_settings().max_image_pixels).rgb
        )
    except (OSError, ValueError):
        return None


@st.cache_data(ttl=3600, max_entries=96, show_spinner=False)
def slice_values(values_file: str, scale: float, offset: float) -> np.ndarray | None:
    try:
        return read_values(values_file, scale, offset)
    except (OSError, ValueError):
        return None


def presets(row: SliceRow, values: np.ndarray | None) -> dict[str, Window]:
    """The window presets for a slice: its header's window, the full range of its values, and a contrast
    stretch between their 1st and 99th percentiles (MR values have no fixed scale, unlike CT's Hounsfield)."""
    if values is None:
        return {"Stored image": Window(127.5, 255.0)}
    low, high = float(values.min()), float(values.max())
    p1, p99 = (float(v) for v in np.percentile(values, [1, 99]))
    found = {}
    if row.window is not None:
        found["Header window"] = Window(*row.window)
    found["Full range"] = Window((low + high) / 2, max(high - low, 1.0))
    found["Contrast (1st-99th percentile)"] = Window((p1 + p99) / 2, max(p99 - p1, 1.0))
    return found


def windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """Values through the window, as HxWx3 uint8 gray."""
    low = window.center - window.width / 2
    gray = np.clip((values - low) / max(window.width, 1e-6), 0.0, 1.0)
    g = np.rint(gray * 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def zoomed(rgb: np.ndarray, factor: float, across: float, down: float) -> np.ndarray:
    """The part of the image `factor` times closer, centred at (across, down) as fractions of its width and
    height, drawn at DISPLAY_SIDE with nearest-neighbour pixels so the original pixels stay visible."""
    height, width = rgb.shape[:2]
    w, h = max(2, round(width / factor)), max(2, round(height / factor))
    left = int(np.clip(round(across * width - w / 2), 0, width - w))
    top = int(np.clip(round(down * height - h / 2), 0, height - h))
    crop = rgb[top : top + h, left : left + w]
    scale = DISPLAY_SIDE / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(crop).resize(size, Image.NEAREST if factor > 1 else Image.BILINEAR))


def colour_scale(height: int = 256) -> np.ndarray:
    """The heatmap's colours from high (top) to low, as a narrow image."""
    return jet_colormap(np.linspace(1.0, 0.0, height)[:, None].repeat(24, axis=1))


def heatmap_over(row: SliceRow, framework: str, base: np.ndarray, opacity: float) -> tuple[np.ndarray | None, str]:
    """`base` (the slice as windowed, at analysis size) with the heatmap of the model that answered for this slice
    in `framework`, or None and why not."""
    from ui.predictors import heatmap

    answer = row.results.get(framework)
    rgb = slice_rgb(row.file_path) if row.file_path else None
    if answer is None or rgb is None or row.sha256 is None:
        return None, f"{framework_label(framework)} gave no answer for this slice."
    with read_scope() as session:
        version = get_model_version(session=session, version_id=int(answer["model_version_id"]))
        model = (version.artifact_path, version.sha256) if version is not None else None
    if model is None:
        return None, "The model that answered is no longer registered."
    try:
        cam = heatmap(framework, model[0], model[1], row.sha256, rgb)
    except (OSError, ValueError, RuntimeError) as exc:
        return None, f"The heatmap could not be computed: {exc}"
    if cam.shape != base.shape[:2]:
        cam = np.asarray(Image.fromarray(cam.astype(np.float32)).resize(base.shape[1::-1], Image.BILINEAR))
    return make_overlay(base, cam, opacity), ""


def series_entries(scans: list[ScanEntry]) -> list[tuple[SeriesSummary | None, list[ScanEntry]]]:
    """A patient's scans (newest first) as History lists them: a scan on its own, or a series as one entry with its
    slices beneath, where the series' newest slice stands."""
    with read_scope() as session:
        of = series_of_scans(session=session, scan_ids=[s.scan_id for s in scans])
        summaries = {i: series_summary(session=session, series_id=i) for i in set(of.values())}
    grouped: dict[int, list[ScanEntry]] = {}
    entries: list[tuple[SeriesSummary | None, list[ScanEntry]]] = []
    for scan in scans:
        series_id = of.get(scan.scan_id)
        if series_id is None or summaries.get(series_id) is None:
            entries.append((None, [scan]))
        elif series_id not in grouped:
            grouped[series_id] = [scan]
            entries.append((summaries[series_id], grouped[series_id]))
        else:
            grouped[series_id].append(scan)
    return entries


def series_heading(summary: SeriesSummary) -> str:
    """One line naming a series and its answer, in markdown."""
    answer = (
        f"**{TumorClass(summary.label).label}** {summary.confidence:.0%}"
        + (" · needs review" if summary.flagged else "")
        if summary.label in CLASSES and summary.confidence is not None
        else summary.status
    )
    return (
        f"**Series #{summary.series_id}** · {literal(summary.description or summary.series_uid)} · "
        f"{summary.slices} slice(s) · {answer}"
    )
