"""Exports of the history: a CSV of filtered predictions and a self-contained HTML report per patient."""

import base64
import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from db.history import PatientTimeline, PredictionRow, ScanEntry
from db.schema import CLASSES, utcnow
from domain import DISCLAIMER

REPORT_IMAGE_SIDE = 384
CSV_COLUMNS = (
    "prediction_id",
    "created_at_utc",
    "patient_id",
    "scan_id",
    "original_name",
    "source",
    "job_id",
    "model_version_id",
    "model",
    "framework",
    "predicted_label",
    "confidence",
    *(f"p_{name}" for name in CLASSES),
    "needs_review",
    "review_status",
    "final_label",
    "reviewer",
    "reviewed_at_utc",
    "review_note",
)


@dataclass(frozen=True)
class Heatmap:
    """A heatmap overlay for a report, or why there is none."""

    model_name: str
    method: str = "Grad-CAM"  # HiResCAM for the CNN (domain.Framework.heatmap)
    overlay: np.ndarray | None = None  # HxWx3 uint8
    error: str | None = None


HeatmapFn = Callable[[ScanEntry], Heatmap | None]


def _timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _cell(value: object) -> object:
    # A spreadsheet runs a cell that starts like a formula; a leading quote makes it text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def predictions_csv(*, rows: Iterable[PredictionRow]) -> bytes:
    """The rows as CSV (UTF-8), one line per prediction, probabilities in their own columns."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            _cell(value)
            for value in (
                row.prediction_id,
                _timestamp(row.created_at),
                row.patient_mrn or "",
                row.scan_id,
                row.original_name,
                row.source,
                row.job_id or "",
                row.model_version_id,
                row.model_name,
                row.framework,
                row.label,
                f"{row.confidence:.4f}",
                *(f"{float(row.probabilities.get(name, 0.0)):.4f}" for name in CLASSES),
                "yes" if row.needs_review else "no",
                row.review_status,
                row.final_label,
                row.reviewer or "",
                _timestamp(row.reviewed_at),
                row.review_note or "",
            )
        )
    return out.getvalue().encode("utf-8")


def image_png(rgb: np.ndarray, *, max_side: int) -> bytes:
    """An RGB array as PNG bytes, scaled down to fit `max_side`."""
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def scan_png(file_path: str | Path, *, max_side: int) -> bytes | None:
    """A stored scan as PNG bytes fitting `max_side`, or None when its file is missing or unreadable."""
    try:
        with Image.open(file_path) as image:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, UnidentifiedImageError):
        return None
    return image_png(rgb, max_side=max_side)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _review_text(row: PredictionRow) -> str:
    when = f" on {_timestamp(row.reviewed_at)} UTC" if row.reviewed_at else ""
    by = f" by {escape(row.reviewer)}" if row.reviewer else ""
    if row.review_status == "confirmed":
        text = f"Confirmed{by}{when}"
    elif row.review_status == "corrected":
        text = f"Corrected to <strong>{escape(row.final_label)}</strong>{by}{when}"
    else:
        text = "Not reviewed" + (" (flagged for review)" if row.needs_review else "")
    if row.review_note:
        text += f'<div class="note">Note: {escape(row.review_note)}</div>'
    return text


def _figure(png: bytes | None, caption: str, missing: str) -> str:
    label = f"<figcaption>{escape(caption)}</figcaption>"
    if png is None:
        return f'<figure class="missing"><div>{escape(missing)}</div>{label}</figure>'
    return f'<figure><img src="{_data_uri(png)}" alt="{escape(caption)}">{label}</figure>'


def _heatmap_figure(heatmap: Heatmap | None) -> str:
    if heatmap is None:
        return ""
    caption = f"{heatmap.method} heatmap ({heatmap.model_name})"
    if heatmap.overlay is None:
        return _figure(None, caption, f"Heatmap unavailable: {heatmap.error or 'unknown reason'}")
    return _figure(image_png(heatmap.overlay, max_side=REPORT_IMAGE_SIDE), caption, "")


def _scan_section(index: int, total: int, scan: ScanEntry, heatmap: Heatmap | None) -> str:
    details = [
        f"Stored {_timestamp(scan.created_at)} UTC",
        f"source: {scan.source}" + (f" (batch job {scan.job_id})" if scan.job_id else ""),
        f"{scan.image_format} {scan.width}x{scan.height}",
    ]
    details += [f"study date: {scan.study_date}"] if scan.study_date else []
    details += [f"modality: {scan.modality}"] if scan.modality else []
    details += [scan.series_description] if scan.series_description else []
    details += [scan.note] if scan.note else []
    header = "".join(f"<th>{escape(name)}</th>" for name in ("Model", "Predicted", "Confidence", *CLASSES, "Review"))
    rows = "".join(
        "<tr>"
        f"<td>{escape(p.model_name)}<div class='muted'>{escape(p.framework)} · version {p.model_version_id}</div></td>"
        f"<td><strong>{escape(p.label)}</strong></td><td>{p.confidence:.1%}</td>"
        + "".join(f"<td>{float(p.probabilities.get(name, 0.0)):.1%}</td>" for name in CLASSES)
        + f"<td>{_review_text(p)}</td></tr>"
        for p in scan.predictions
    )
    table = (
        f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"
        if scan.predictions
        else "<p>No model prediction is recorded for this scan.</p>"
    )
    scan_figure = _figure(scan_png(scan.file_path, max_side=REPORT_IMAGE_SIDE), "Scan", "Image file missing")
    return (
        f'<section class="scan"><h2>Scan {index} of {total}: {escape(scan.original_name)}</h2>'
        f'<p class="muted">{escape(" · ".join(details))}</p>'
        f'<div class="images">{scan_figure}{_heatmap_figure(heatmap)}</div>{table}</section>'
    )


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 0; }
.disclaimer { border: 1px solid #c77; background: #fff4f4; padding: 0.6em 0.8em; }
.scan { border-top: 1px solid #bbb; padding-top: 1em; margin-top: 1.5em; page-break-inside: avoid; }
.images { display: flex; gap: 1em; flex-wrap: wrap; }
figure { margin: 0; } figure img { max-width: 320px; border: 1px solid #ddd; }
figure.missing div { width: 320px; padding: 2em 0; text-align: center; background: #eee; }
figcaption, .muted { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; margin-top: 0.8em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
.note { font-style: italic; margin-top: 0.3em; }
"""


def patient_report_html(
    *, timeline: PatientTimeline, heatmap: HeatmapFn | None = None, generated_at: datetime | None = None
) -> str:
    """A printable HTML page of every scan of a patient, images embedded, for attaching to a record."""
    generated = _timestamp(generated_at or utcnow())
    total = len(timeline.scans)
    sections = "".join(
        _scan_section(i, total, scan, heatmap(scan) if heatmap else None)
        for i, scan in enumerate(reversed(timeline.scans), start=1)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Brain MRI report: patient {escape(timeline.mrn)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Brain MRI classification report</h1>"
        f"<p>Patient id <strong>{escape(timeline.mrn)}</strong> · {total} scan{'s' if total != 1 else ''} · "
        f"generated {generated} UTC · newest scan first</p>"
        f'<p class="disclaimer">{escape(DISCLAIMER)}</p>'
        f"{sections or '<p>This patient has no scans.</p>'}"
        f'<p class="disclaimer">{escape(DISCLAIMER)}</p></body></html>'
    )
