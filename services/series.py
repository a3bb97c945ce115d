"""A DICOM series predicted as one: each slice through the batch path (decode, the brain-MRI check, every model,
saved to the patient's record), then the series answer by the rule chosen on validation pseudo-series
(models/inference/series_rule.py), then its report and heatmap captures queued for the PACS.

The Celery task (worker/series.py) is a thin wrapper around `run_series`.
"""

import hashlib
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.uid import ComprehensiveSRStorage, generate_uid
from sqlalchemy.orm import Session

from db.schema import SeriesSlice, utcnow
from db.series import get_series, ordered_slices, sends_of_series, set_series_status, slices_to_predict, staged_slice
from db.session import session_scope
from db.storage import scan_file_path
from domain import CLASSES, UserError, framework_label
from models.data.imaging import DecodedImage, analysis_rgb, decode_image, make_overlay
from models.inference.series_rule import SeriesRule, series_answer
from services.batch import BatchFile, BatchModel, FileRules, load_models, models_rule, predict_listing
from services.batch_input import Listing
from services.diagnosis import SavedScan
from services.dicom_intake import reopen_if_incomplete, spool_folder
from services.dicom_results import Instance, ModelInfo, Read, StudyRef, capture_pixels, heatmap_capture, series_report
from services.dicom_send import destination, outbox
from settings import Settings, get_settings

# The most suspicious slices whose heatmaps go back to the PACS as Secondary Captures.
CAPTURED_SLICES = 3
HEATMAP_OPACITY = 0.45
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def run_series(
    job_id: int, params: dict[str, Any], *, progress: Callable[[int, int, str], None], check_cancel: Callable[[], None]
) -> dict[str, Any]:
    """The job: pull the series first when asked, predict its slices not yet predicted, answer the series and
    queue its results for the PACS. A problem a person can fix raises UserError with the reason."""
    settings = get_settings()
    series_id = params.get("series_id")
    pulled: dict[str, Any] = {}
    try:
        if params.get("pull"):
            series_id, pulled = _pull(job_id, params["pull"], progress)
        if series_id is None:
            raise UserError("The job names no series.")
        with session_scope() as session:
            series = get_series(session=session, series_id=series_id)
            if series is None:
                raise UserError(f"Series {series_id} no longer exists (it was deleted with its patient).")
            set_series_status(session=session, series_id=series_id, status="queued", job_id=job_id)
            mrn = series.patient.mrn if series.patient is not None else None
            # What the PACS was last sent for: the same answer again (a job delivered twice) sends nothing new.
            sent_for = series.answer if sends_of_series(session=session, series_id=series_id) else None
            names = [
                Path(s.staged_file).name
                for s in slices_to_predict(session=session, series_id=series_id)
                if s.staged_file
            ]
        models = load_models(params.get("model_version_ids"))
        rules = FileRules(
            patient_mode="single" if mrn else "none",
            patient_mrn=mrn,
            threshold=settings.confidence_threshold,
            max_bytes=settings.max_upload_mb * 2**20,
            max_pixels=settings.max_image_pixels,
            pair=models_rule(models),
        )
        listing = Listing(spool_folder(series_id, settings), images=sorted(names))
        result = predict_listing(
            job_id,
            listing,
            models,
            rules,
            progress=progress,
            check_cancel=check_cancel,
            record=_recorder(series_id, models, settings),
        )
        _unstage(series_id)
        answer = answer_series(series_id, models, settings)
        send_id = series_results(series_id, models) if answer.get("label") and answer != sent_for else None
    except BaseException:
        if series_id is not None:
            with session_scope() as session:
                set_series_status(session=session, series_id=series_id, status="failed")
        raise
    return {**result, **pulled, "series_id": series_id, "series_answer": answer, "send_id": send_id}


def _pull(job_id: int, pull: dict[str, str], progress: Callable[[int, int, str], None]) -> tuple[int, dict[str, Any]]:
    from services.dicomweb import pull_series

    def pulled_so_far(n: int) -> None:
        progress(0, 0, f"{n} instance(s) retrieved from the PACS")

    series_id, received, refused = pull_series(pull["study_uid"], pull["series_uid"], progress=pulled_so_far)
    return series_id, {"pulled": received, "pull_refused": refused[:20]}


def values_png(values: np.ndarray) -> tuple[bytes, float, float]:
    """Pixel values as a 16-bit PNG, and (scale, offset) with value = stored * scale + offset: exact for the
    integer values an MR scanner writes within a 16-bit range."""
    low, high = float(values.min()), float(values.max())
    integral = bool(np.all(np.mod(values, 1) == 0)) and high - low <= 65535
    scale = 1.0 if integral or high == low else (high - low) / 65535
    stored = np.rint((values - low) / scale).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG")
    return buffer.getvalue(), scale, low


def read_values(path: str | Path, scale: float, offset: float) -> np.ndarray:
    """The pixel values kept by values_png, as float32."""
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.float32) * np.float32(scale) + np.float32(offset)


def _save_values(image: DecodedImage) -> tuple[str, float, float] | None:
    """The image's pixel values kept beside its scan file (named by the scan's sha256, so the file sweep keeps
    it exactly as long as the scan), for window and level on the series page."""
    if image.values is None:
        return None
    data, scale, offset = values_png(image.values)
    path = scan_file_path(sha256=image.sha256, suffix=f".{hashlib.sha256(data).hexdigest()[:16]}.values.png")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path), scale, offset


def _recorder(
    series_id: int, models: list[BatchModel], settings: Settings
) -> Callable[[Session, BatchFile, SavedScan | None], None]:
    """Record each slice's outcome beside its batch item, in the same transaction."""
    folder = spool_folder(series_id, settings)
    frameworks = {m.version_id: m.framework for m in models}

    def record(session: Session, item: BatchFile, saved: SavedScan | None) -> None:
        row = staged_slice(session=session, series_id=series_id, staged_file=str(folder / item.rel_path))
        if row is None:
            return
        if saved is not None and item.image is not None:
            row.status, row.scan_id, row.needs_review, row.error = "done", saved.scan.id, saved.flagged, item.note
            row.results = {
                frameworks[p.model_version_id]: {
                    "label": p.label,
                    "confidence": p.confidence,
                    "probabilities": p.probabilities,
                    "model_version_id": p.model_version_id,
                }
                for p in saved.predictions
            }
            if kept := _save_values(item.image):
                row.values_file, row.values_scale, row.values_offset = kept
            if item.image.window is not None:
                row.window_center, row.window_width = item.image.window
        elif item.image is None:
            row.status, row.error = "error", item.error
        else:
            row.status, row.error = "skipped", item.refused

    return record


def _unstage(series_id: int) -> None:
    """Remove the staged files of slices that are recorded: only the scan files are kept."""
    with session_scope() as session:
        done = [
            s for s in ordered_slices(session=session, series_id=series_id) if s.status != "received" and s.staged_file
        ]
        for row in done:
            Path(str(row.staged_file)).unlink(missing_ok=True)
            row.staged_file = None


def _probabilities(row: SeriesSlice, framework: str) -> list[float]:
    probs = (row.results or {}).get(framework, {}).get("probabilities", {})
    return [float(probs.get(c, 0.0)) for c in CLASSES]


def answer_series(series_id: int, models: list[BatchModel], settings: Settings | None = None) -> dict[str, Any]:
    """Give the series its answer from all its slices so far, and record it; returns the answer as recorded."""
    settings = settings or get_settings()
    rule = SeriesRule.load()
    with session_scope() as session:
        series = get_series(session=session, series_id=series_id)
        if series is None:
            raise UserError(f"Series {series_id} no longer exists.")
        slices = ordered_slices(session=session, series_id=series_id)
        considered = [s for s in slices if s.status in ("done", "skipped")]
        done = [s for s in considered if s.status == "done"]
        frameworks = [m.framework for m in models if all(m.framework in (s.results or {}) for s in done)]
        pair = models_rule([m for m in models if m.framework in frameworks]) if len(frameworks) == 2 else None
        answer = series_answer(
            {
                fw: np.array([_probabilities(s, fw) for s in considered]).reshape(len(considered), len(CLASSES))
                for fw in frameworks
            },
            accepted=[s.status == "done" for s in considered],
            slice_flagged=[s.needs_review for s in considered],
            rule=rule,
            threshold=pair.threshold if pair else settings.confidence_threshold,
            model_names={fw: framework_label(fw) for fw in frameworks},
            combine=pair.slice_answers if pair else None,
        )
        recorded: dict[str, Any] = {
            "rule": rule.describe(f"each slice's one answer {pair.describe()}") if pair else rule.describe(),
            "rule_params": {"k": rule.k, "min_tumor": rule.min_tumor, "min_slices": rule.min_slices},
            "slices": len(slices),
            "errors": sum(s.status == "error" for s in slices),
            "models": [
                {"framework": m.framework, "version_id": m.version_id, "name": m.name, "sha256": m.sha256}
                for m in models
                if m.framework in frameworks
            ],
        }
        if answer is None:
            recorded |= {
                "label": None,
                "flagged": True,
                "accepted": 0,
                "refused": sum(s.status == "skipped" for s in slices),
                "reasons": ["no slice was accepted as a brain MRI slice: the series has no answer"],
            }
        else:
            ids = [s.id for s in considered]
            recorded |= answer.as_dict()
            recorded["deciding"] = [ids[i] for i in answer.deciding]
            recorded["ranking"] = [ids[i] for i in answer.ranking]
            recorded["deciding_instances"] = [
                [considered[i].sop_instance_uid, considered[i].frame] for i in answer.deciding
            ]
        series.answer, series.answered_at, series.status = recorded, utcnow(), "answered"
        reopen_if_incomplete(session=session, series_id=series_id)
    return recorded


def _study_ref(session: Session, series_id: int) -> StudyRef:
    series = get_series(session=session, series_id=series_id)
    if series is None:
        raise UserError(f"Series {series_id} no longer exists.")
    slices = ordered_slices(session=session, series_id=series_id)
    instances = [Instance(s.sop_class_uid, s.sop_instance_uid, s.frame, s.sop_class_uid == ENHANCED_MR) for s in slices]
    mrn = series.patient.mrn if series.patient is not None else None
    return StudyRef(series.study_uid, series.series_uid, mrn, series.study_date, instances)


def _earlier_reports(session: Session, series_id: int, report_series_uid: str) -> list[tuple[str, str]]:
    return [
        (report_series_uid, o["sop_instance_uid"])
        for send in sends_of_series(session=session, series_id=series_id)
        for o in send.objects
        if o["sop_class_uid"] == ComprehensiveSRStorage
    ]


def _result_series_uids(session: Session, series_id: int) -> tuple[str, str]:
    series = get_series(session=session, series_id=series_id)
    assert series is not None
    series.report_series_uid = series.report_series_uid or generate_uid()
    series.capture_series_uid = series.capture_series_uid or generate_uid()
    return series.report_series_uid, series.capture_series_uid


def series_results(series_id: int, models: list[BatchModel]) -> int | None:
    """Make the series' report and the heatmap captures of its most suspicious slices, into the outbox for the
    PACS; returns the send's id, None when no destination is configured."""
    if destination() is None:
        return None
    with session_scope() as session:
        ref = _study_ref(session, series_id)
        report_uid, capture_uid = _result_series_uids(session, series_id)
        series = get_series(session=session, series_id=series_id)
        assert series is not None and series.answer is not None
        answer = dict(series.answer)
        earlier = _earlier_reports(session, series_id, report_uid)
        by_id = {s.id: s for s in ordered_slices(session=session, series_id=series_id)}
        order = {s.id: i for i, s in enumerate(by_id.values())}
        chosen = [by_id[i] for i in answer.get("ranking", [])[:CAPTURED_SLICES] if by_id[i].scan_id is not None]
        sources = [
            (
                Instance(s.sop_class_uid, s.sop_instance_uid, s.frame, s.sop_class_uid == ENHANCED_MR),
                s.scan_id,
                order[s.id],
            )
            for s in chosen
        ]
        scan_paths = {s.scan_id: _scan_path(session, s.scan_id) for s in chosen}
    infos = [ModelInfo(m["framework"], m["version_id"], m["name"], m["sha256"]) for m in answer["models"]]
    report = series_report(
        ref, answer, infos, report_series_uid=report_uid, instance_number=len(earlier) + 1, previous=earlier
    )
    captures = []
    for number, (source, scan_id, position) in enumerate(sources, start=1):
        pixels = _capture(
            scan_paths.get(scan_id), models, f"slice {position + 1} of {len(ref.instances)}, {answer['label']}"
        )
        if pixels is not None:
            captures.append(
                heatmap_capture(ref, source, pixels, capture_series_uid=capture_uid, instance_number=number)
            )
    what = f"report and {len(captures)} heatmap capture(s)"
    return outbox(series_id, [report, *captures], what=what)


def _scan_path(session: Session, scan_id: int | None) -> str | None:
    from db.schema import Scan

    scan = session.get(Scan, scan_id) if scan_id is not None else None
    return scan.file_path if scan is not None else None


def _capture(path: str | None, models: list[BatchModel], caption: str) -> np.ndarray | None:
    """A slice beside each model's heatmap over it, from its stored scan file; None when the file is gone."""
    if path is None or not Path(path).is_file():
        return None
    data = Path(path).read_bytes()
    rgb = analysis_rgb(
        decode_image(data, Path(path).name, max_bytes=len(data), max_pixels=get_settings().max_image_pixels).rgb
    )
    overlays = [
        (framework_label(m.framework), make_overlay(rgb, m.predictor.heatmap(rgb), HEATMAP_OPACITY)) for m in models
    ]
    return capture_pixels(rgb, overlays, caption)


def amended_report(series_id: int, *, label: str, author: str, at: datetime, note: str | None = None) -> int | None:
    """An amended report of a series for the PACS: its answer with a clinician's read (class, author, time and
    note), naming the reports sent before as its predecessors, into the outbox (worker.submit.submit_amended_report
    sends it). Returns the send's id; None when no destination is configured. UserError when the series has no
    answer yet or the class is unknown."""
    if label not in CLASSES:
        raise UserError(f"Unknown class {label!r}; choose one of {', '.join(CLASSES)}.")
    if destination() is None:
        return None
    with session_scope() as session:
        series = get_series(session=session, series_id=series_id)
        if series is None or not series.answer or not series.answer.get("label"):
            raise UserError(f"Series {series_id} has no answer to amend.")
        answer = dict(series.answer)
        ref = _study_ref(session, series_id)
        report_uid, _ = _result_series_uids(session, series_id)
        earlier = _earlier_reports(session, series_id, report_uid)
    infos = [ModelInfo(m["framework"], m["version_id"], m["name"], m["sha256"]) for m in answer["models"]]
    report = series_report(
        ref,
        answer,
        infos,
        report_series_uid=report_uid,
        instance_number=len(earlier) + 1,
        previous=earlier,
        read=Read(label, author, at, note),
    )
    return outbox(series_id, [report], what=f"amended report (read by {author})")
