"""Query functions for patients, stored scans and their predictions."""

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import Patient, Prediction, Scan

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


def search_mrns(*, session: Session, prefix: str = "", limit: int = 50) -> list[str]:
    query = select(Patient.mrn).order_by(Patient.mrn).limit(limit)
    if prefix:
        query = query.where(Patient.mrn.ilike(f"{prefix}%"))
    return list(session.scalars(query))


def find_scan(*, session: Session, patient_pk: int | None, sha256: str) -> Scan | None:
    if patient_pk is None:
        cond = Scan.patient_pk.is_(None)
    else:
        cond = Scan.patient_pk == patient_pk
    return session.scalar(select(Scan).where(cond, Scan.sha256 == sha256))


def get_or_create_scan(*, session: Session, patient_pk: int | None, sha256: str, **fields: Any) -> tuple[Scan, bool]:
    """The scan of this image for this patient, creating it when new; (scan, created)."""
    scan = find_scan(session=session, patient_pk=patient_pk, sha256=sha256)
    if scan is not None:
        return scan, False
    scan = Scan(patient_pk=patient_pk, sha256=sha256, **fields)
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


def validate_mrn(value: str) -> str:
    """The patient id, trimmed; raises ValueError with a message for the person who typed it."""
    mrn = value.strip()
    if not PATIENT_ID_PATTERN.fullmatch(mrn):
        raise ValueError("A patient id is 1 to 64 characters: letters, digits, '-', '_' or '.'.")
    return mrn
