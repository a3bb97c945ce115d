"""Exports: CSV of predictions and of a batch, and a self-contained HTML report per patient.

The report is a Jinja2 template with autoescape on, so text a person typed or a file carried (patient ids,
file names, DICOM descriptions, notes) is always shown as text.
"""

import base64
import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image, ImageOps, UnidentifiedImageError

from db.batches import BatchRow
from db.history import PatientTimeline, PredictionRow, ScanEntry
from db.schema import utcnow
from domain import CLASSES, DISCLAIMER, Framework, ReadLabel, framework_label
from services.diagnosis import (
    CombinedAnswer,
    ModelResult,
    RuleOf,
    answer_rule,
    answer_rules,
    combined_answer,
    review,
    stored_result,
)

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
    # A clinician's read of the scan, empty until there is one; the columns above are the model's answer.
    "read_label",
    "read_by",
    "read_at_utc",
    "read_note",
)


@dataclass(frozen=True)
class Heatmap:
    """A heatmap overlay for a report, or why there is none."""

    model_name: str
    method: str = "Occlusion"  # HiResCAM for the CNN (domain.Framework.heatmap)
    overlay: np.ndarray | None = None  # HxWx3 uint8
    error: str | None = None


HeatmapFn = Callable[[ScanEntry], Heatmap | None]


def _timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def csv_cell(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: one that starts like a formula, also after leading spaces,
    or with a control character, gets a leading quote."""
    if isinstance(value, str) and value and (value.lstrip()[:1] in ("=", "+", "-", "@") or not value[0].isprintable()):
        return "'" + value
    return value


def predictions_csv(*, rows: Iterable[PredictionRow]) -> bytes:
    """The rows as CSV (UTF-8), one line per prediction, probabilities in their own columns."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            csv_cell(value)
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
                row.read_label or "",
                row.read_by or "",
                _timestamp(row.read_at),
                row.read_note or "",
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


def _data_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


HeatmapFn = Callable[[str, str, str, str, np.ndarray], np.ndarray]


def scan_heatmap(
    scan: ScanEntry, prediction: PredictionRow, *, heatmap: HeatmapFn, max_pixels: int, opacity: float
) -> Heatmap:
    """The heatmap of the model behind `prediction` over the stored scan, or why it could not be computed.

    heatmap(framework, model path, model sha256, image sha256, rgb) computes the map (the app passes its
    cached one).
    """
    from models.data.imaging import analysis_rgb, decode_image, make_overlay

    name = f"{prediction.model_name} ({prediction.framework})"
    method = Framework(prediction.framework).heatmap
    try:
        data = Path(scan.file_path).read_bytes()
        rgb = analysis_rgb(
            decode_image(data, Path(scan.file_path).name, max_bytes=len(data), max_pixels=max_pixels).rgb
        )
        cam = heatmap(prediction.framework, prediction.artifact_path, prediction.model_sha256, scan.sha256, rgb)
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        return Heatmap(model_name=name, method=method, error=f"the heatmap could not be computed: {exc}")
    return Heatmap(model_name=name, method=method, overlay=make_overlay(rgb, cam, opacity))


def first_heatmap(scan: ScanEntry, heatmap: Callable[[ScanEntry, PredictionRow], Heatmap]) -> Heatmap | None:
    """The heatmap of the first of the scan's models that can compute one (or the last error)."""
    result = None
    for prediction in scan.predictions:
        result = heatmap(scan, prediction)
        if result.overlay is not None:
            break
    return result


def _scan_details(scan: ScanEntry) -> str:
    details = [
        f"Stored {_timestamp(scan.created_at)} UTC",
        f"source: {scan.source}" + (f" (batch job {scan.job_id})" if scan.job_id else ""),
        f"{scan.image_format} {scan.width}x{scan.height}",
    ]
    details += [f"study date: {scan.study_date}"] if scan.study_date else []
    details += [f"modality: {scan.modality}"] if scan.modality else []
    details += [scan.series_description] if scan.series_description else []
    details += [scan.note] if scan.note else []
    details += [f"refused by the brain-MRI check: {scan.refusal}"] if scan.refusal else []
    return " · ".join(details)


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def scan_answer(entry: ScanEntry, rule_of: RuleOf = answer_rule) -> CombinedAnswer | None:
    """The models' one answer for a stored scan answered by two models (services.diagnosis.combined_answer)."""
    if len(entry.predictions) < 2:
        return None
    results = [
        stored_result(framework=p.framework, model_version_id=p.model_version_id, probabilities=p.probabilities)
        for p in entry.predictions
    ]
    return combined_answer(results, rule_of(results))


def patient_report_html(
    *, timeline: PatientTimeline, heatmap: HeatmapFn | None = None, generated_at: datetime | None = None
) -> str:
    """A printable HTML page of every scan of a patient, images embedded, for attaching to a record."""
    scans = []
    rule_of = answer_rules()
    for scan in reversed(timeline.scans):
        shown = heatmap(scan) if heatmap else None
        scans.append(
            {
                "entry": scan,
                "answer": scan_answer(scan, rule_of),
                "details": _scan_details(scan),
                "image": _data_uri(scan_png(scan.file_path, max_side=REPORT_IMAGE_SIDE)),
                "heatmap": shown,
                "heatmap_image": _data_uri(
                    image_png(shown.overlay, max_side=REPORT_IMAGE_SIDE)
                    if shown is not None and shown.overlay is not None
                    else None
                ),
            }
        )
    return (
        _templates()
        .get_template("patient_report.html")
        .render(
            mrn=timeline.mrn,
            scans=scans,
            classes=CLASSES,
            read_text=lambda label: ReadLabel(label).label,
            framework_label=framework_label,
            generated=_timestamp(generated_at or utcnow()),
            disclaimer=DISCLAIMER,
            timestamp=_timestamp,
        )
    )


BATCH_CSV_FIXED = ("file", "status", "patient_id", "true_label", "scan_id")
BATCH_CSV_END = ("needs_review", "why", "read_label", "read_by", "read_at_utc")
# The models' one answer, in a batch of two models (services.diagnosis.combined_answer).
BATCH_CSV_ANSWER = ("answer_class", "answer_confidence")


def batch_row_results(row: BatchRow) -> list[ModelResult]:
    """The models' answers recorded for a file of a batch."""
    return [
        stored_result(
            framework=fw,
            model_version_id=int(result.get("model_version_id") or 0),
            probabilities=result["probabilities"],
        )
        for fw, result in row.results.items()
    ]


def batch_row_answer(row: BatchRow, rule_of: RuleOf = answer_rule) -> CombinedAnswer | None:
    """The models' one answer for a file of a batch (services.diagnosis.combined_answer)."""
    results = batch_row_results(row)
    return combined_answer(results, rule_of(results)) if row.status == "done" else None


def batch_row_reason(row: BatchRow, threshold: float, rule_of: RuleOf = answer_rule) -> str:
    """Why a file of a batch was flagged, skipped or could not be read, in words (a note for the others)."""
    if row.status != "done":
        return row.error or ""
    if not row.needs_review:
        return row.error or ""
    results = batch_row_results(row)
    reasons = review(results, threshold, rule_of(results)).reasons or [
        "flagged by the review rule when it was predicted"
    ]
    return "; ".join([*reasons, *([row.error] if row.error else [])])


def batch_csv(*, rows: Iterable[BatchRow], frameworks: Sequence[str], threshold: float) -> bytes:
    """A batch's rows as CSV: the models' one answer (where there are two) and per model its class, confidence
    and each probability; then whether it is flagged and why (or why it was skipped), and the scan's read once a
    clinician made one."""
    out = io.StringIO()
    writer = csv.writer(out)
    combined = BATCH_CSV_ANSWER if len(frameworks) > 1 else ()
    per_model = [
        f"{fw}_{column}" for fw in frameworks for column in ("class", "confidence", *(f"p_{c}" for c in CLASSES))
    ]
    writer.writerow([*BATCH_CSV_FIXED, *combined, *per_model, *BATCH_CSV_END])
    rule_of = answer_rules()
    for row in rows:
        values: list[object] = [
            row.rel_path,
            row.status,
            row.patient_mrn or "",
            row.true_label or "",
            row.scan_id or "",
        ]
        if combined:
            answer = batch_row_answer(row, rule_of)
            values += [answer.label, f"{answer.confidence:.4f}"] if answer else ["", ""]
        for fw in frameworks:
            result = row.results.get(fw)
            if result is None:
                values += [""] * (2 + len(CLASSES))
                continue
            values += [result["label"], f"{result['confidence']:.4f}"]
            values += [f"{result['probabilities'][c]:.4f}" for c in CLASSES]
        values += [
            ("yes" if row.needs_review else "no") if row.status == "done" else "",
            batch_row_reason(row, threshold, rule_of),
            row.read_label or "",
            row.read_by or "",
            _timestamp(row.read_at),
        ]
        writer.writerow(csv_cell(v) for v in values)
    return out.getvalue().encode("utf-8")
