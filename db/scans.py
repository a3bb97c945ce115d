"""Query functions for patients, stored scans and their predictions."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import CLASSES, Patient, Prediction, Scan
from db.storage import store_scan_file
from models.predictor import averaged, needs_review

if TYPE_CHECKING:
    from models.imaging import DecodedImage

PATIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def get_patient(*, session: Session, mrn: str) -> Patient | None:
    return session.scalar(select(Patient).where(Patient.mrn == mrn))


def get_or_create_patient(*, session: Session, mrn: str) -> Patient:
    patient = get_patient(session=session, mrn=mrn)
    if patient is None:
        patient = Patient(mrn=mrn)
        session.add(patient)
        session.flush()
    return patient


def search_patient_ids(*, session: Session, prefix: str = "", limit: int = 50) -> list[str]:
    query = select(Patient.mrn).order_by(Patient.mrn).limit(limit)
    if prefix:
        query = query.where(Patient.mrn.ilike(f"{prefix}%"))
    return list(session.scalars(query))


def find_scan(*, session: Session, patient_id: int | None, sha256: str) -> Scan | None:
    if patient_id is None:
        cond = Scan.patient_id.is_(None)
    else:
        cond = Scan.patient_id == patient_id
    return session.scalar(select(Scan).where(cond, Scan.sha256 == sha256))


def get_or_create_scan(*, session: Session, patient_id: int | None, sha256: str, **fields: Any) -> tuple[Scan, bool]:
    """The scan of this image for this patient, creating it when new; (scan, created)."""
    scan = find_scan(session=session, patient_id=patient_id, sha256=sha256)
    if scan is not None:
        return scan, False
    scan = Scan(patient_id=patient_id, sha256=sha256, **fields)
    session.add(scan)
    session.flush()
    return scan, True


def upsert_prediction(
    *,
    session: Session,
    scan_id: int,
    model_version_id: int,
    label: str,
    probabilities: dict[str, float],
    confidence: float,
    needs_review: bool,
    source: str,
    job_id: int | None = None,
) -> tuple[Prediction, bool]:
    """One prediction per scan and model version: a repeat returns the existing row; (row, created)."""
    row = session.scalar(
        select(Prediction).where(Prediction.scan_id == scan_id, Prediction.model_version_id == model_version_id)
    )
    if row is not None:
        return row, False
    row = Prediction(
        scan_id=scan_id,
        model_version_id=model_version_id,
        label=label,
        probabilities=probabilities,
        confidence=confidence,
        needs_review=needs_review,
        source=source,
        job_id=job_id,
    )
    session.add(row)
    session.flush()
    return row, True


def scan_is_shared(*, session: Session, sha256: str) -> bool:
    """Whether more than one scan row points at this stored file."""
    return len(list(session.scalars(select(Scan.id).where(Scan.sha256 == sha256).limit(2)))) > 1


def validate_patient_id(value: str) -> str:
    """The patient id, trimmed; raises ValueError with a message for the person who typed it."""
    mrn = value.strip()
    if not PATIENT_ID_PATTERN.fullmatch(mrn):
        raise ValueError("A patient id is 1 to 64 characters: letters, digits, '-', '_' or '.'.")
    return mrn


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


def _by_framework(results: list[ModelResult]) -> dict[str, np.ndarray]:
    return {r["framework"]: np.array([r["probabilities"][c] for c in CLASSES]) for r in results}


def review_needed(results: list[ModelResult], threshold: float) -> bool:
    """Whether a clinician should look again: a model is unsure or the models disagree."""
    return needs_review(_by_framework(results), threshold)


def averaged_result(results: list[ModelResult]) -> tuple[str, float]:
    """The class the models' averaged probabilities favour, and that average."""
    best, mean = averaged(_by_framework(results))
    return CLASSES[best], mean


@dataclass
class SavedScan:
    scan: Scan
    predictions: list[Prediction]
    scan_created: bool
    predictions_created: int


def save_scan_with_predictions(
    *,
    session: Session,
    decoded: "DecodedImage",
    patient_mrn: str | None,
    source: str,
    results: list[ModelResult],
    threshold: float,
    original_name: str,
    job_id: int | None = None,
) -> SavedScan:
    """Store the image once and record each model's prediction; saving the same image again adds nothing."""
    patient_id = None
    if patient_mrn is not None:
        patient_id = get_or_create_patient(session=session, mrn=validate_patient_id(patient_mrn)).id
    flagged = review_needed(results, threshold)
    # The file goes first: a committed row never points at a missing file.
    path = store_scan_file(data=decoded.stored_bytes, sha256=decoded.sha256, suffix=decoded.stored_suffix)
    scan, scan_created = get_or_create_scan(
        session=session,
        patient_id=patient_id,
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
    return SavedScan(scan=scan, predictions=predictions, scan_created=scan_created, predictions_created=created)
