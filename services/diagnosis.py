"""Diagnosis: each model's answer for a scan, the rule that asks a clinician to look again, and saving both
to the patient's record. The Diagnose page and the batch job both go through here."""

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypedDict

import numpy as np
from sqlalchemy.orm import Session

from db.model_files import pair_report_digests
from db.scans import get_or_create_patient, get_or_create_scan, upsert_prediction
from db.schema import Prediction, Scan
from db.session import read_scope
from db.storage import lock_scan_files, store_scan_file
from domain import CLASSES, framework_label
from models.data.imaging import DecodedImage
from models.inference.calibration import apply_temperature
from services.model_files import PAIR_REPORT

log = logging.getLogger(__name__)


class ModelResult(TypedDict):
    """One model's answer for one image, as stored and as shown."""

    framework: str
    model_version_id: int
    label: str
    confidence: float
    probabilities: dict[str, float]


def model_result(*, framework: str, model_version_id: int, probabilities: Sequence[float] | np.ndarray) -> ModelResult:
    """A ModelResult from a probability vector in CLASSES order."""
    probs = [float(p) for p in probabilities]
    if len(probs) != len(CLASSES):
        raise ValueError(f"expected {len(CLASSES)} probabilities, got {len(probs)}")
    best = int(np.argmax(probs))
    return ModelResult(
        framework=framework,
        model_version_id=model_version_id,
        label=CLASSES[best],
        confidence=probs[best],
        probabilities=dict(zip(CLASSES, probs)),
    )


@dataclass(frozen=True)
class Review:
    """Whether a clinician should look again, and why, in words the page shows."""

    flagged: bool
    reasons: list[str] = field(default_factory=list)


def review(results: list[ModelResult], threshold: float) -> Review:
    """Flag a scan when any model is less confident than the threshold, or the models disagree on the class."""
    if not results:
        return Review(True, ["no model gave an answer"])
    reasons = [
        f"{framework_label(r['framework'])} is {r['confidence']:.0%} confident, below {threshold:.0%}"
        for r in results
        if r["confidence"] < threshold
    ]
    if len({r["label"] for r in results}) > 1:
        reasons.append("the models disagree")
    return Review(bool(reasons), reasons)


def averaged_result(results: list[ModelResult], *, temperature: float = 1.0) -> tuple[str, float]:
    """The class the models' averaged probabilities favour, and that average, calibrated by `temperature`.

    On a validation split with no duplicates across it, the average of the two models is right more often
    than either alone: it is what the Diagnose page names when they disagree.
    """
    mean = np.mean([[r["probabilities"][c] for c in CLASSES] for r in results], axis=0)
    if temperature != 1.0:
        mean = apply_temperature(mean[None, :], temperature)[0]
    best = int(mean.argmax())
    return CLASSES[best], float(mean[best])


@lru_cache(maxsize=8)
def pair_temperature(cnn_sha256: str, mobilenet_sha256: str, report: Path = PAIR_REPORT) -> float:
    """The temperature that calibrates the average of these two models (models/evaluation/pair_report.py), or 1.0 when
    the report was made for other model files, or is not the one recorded with them (their load refuses them then)."""
    try:
        data = report.read_bytes()
        with read_scope() as session:
            recorded = pair_report_digests(session=session, model_sha256s=[cnn_sha256, mobilenet_sha256])
        if recorded and hashlib.sha256(data).hexdigest() not in recorded:
            log.warning("%s is not the pair report recorded with these models; its temperature is not used", report)
            return 1.0
        pair = json.loads(data)
        models = pair["models"]
        if (models["cnn"]["sha256"], models["mobilenet"]["sha256"]) != (cnn_sha256, mobilenet_sha256):
            return 1.0
        return float(pair["averaged"]["calibration"]["temperature"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0


@dataclass
class SavedScan:
    scan: Scan
    predictions: list[Prediction]
    scan_created: bool
    predictions_created: int
    flagged: bool  # what the review rule said of this scan


def save_scan_with_predictions(
    *,
    session: Session,
    decoded: DecodedImage,
    patient_mrn: str | None,
    source: str,
    results: list[ModelResult],
    threshold: float,
    original_name: str,
    job_id: int | None = None,
    refusal: str | None = None,
) -> SavedScan:
    """Store the image once and record each model's prediction; saving the same image again adds nothing.

    `refusal`: why the brain-MRI check refused the image, kept on the scan (which then has no answers).
    The patient is matched as db.scans.get_or_create_patient does (ValueError for an id against the rule).
    """
    patient_pk = None
    if patient_mrn is not None:
        patient_pk = get_or_create_patient(session=session, mrn=patient_mrn).id
    flagged = review(results, threshold).flagged
    # The file goes first, under the lock a delete takes to remove it: a committed row never points at a missing file.
    lock_scan_files(session=session)
    path = store_scan_file(data=decoded.stored_bytes, sha256=decoded.sha256, suffix=decoded.stored_suffix)
    scan, scan_created = get_or_create_scan(
        session=session,
        patient_pk=patient_pk,
        sha256=decoded.sha256,
        file_path=str(path),
        original_name=original_name[:512],
        source=source,
        job_id=job_id,
        width=decoded.width,
        height=decoded.height,
        image_format=decoded.image_format,
        modality=decoded.modality,
        study_date=decoded.study_date,
        series_description=decoded.series_description,
        note=decoded.note,
        refusal=refusal,
    )
    predictions, created = [], 0
    for result in results:
        row, new = upsert_prediction(
            session=session,
            scan_id=scan.id,
            model_version_id=result["model_version_id"],
            label=result["label"],
            probabilities=result["probabilities"],
            confidence=result["confidence"],
            needs_review=bool(flagged),
            source=source,
            job_id=job_id,
        )
        predictions.append(row)
        created += new
    return SavedScan(
        scan=scan, predictions=predictions, scan_created=scan_created, predictions_created=created, flagged=flagged
    )
