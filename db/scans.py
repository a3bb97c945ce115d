"""Query functions for patients, stored scans and their predictions, and the rule a patient id follows."""

import unicodedata
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.schema import Patient, Prediction, Scan, mrn_key

MAX_PATIENT_ID_CHARS = 64  # DICOM's PatientID (VR LO)
PATIENT_ID_RULE = (
    f"A patient id is 1 to {MAX_PATIENT_ID_CHARS} characters, as DICOM's PatientID allows: letters of any "
    "alphabet, digits, spaces and punctuation, but no backslash and no control characters. Case and spaces "
    "around it do not matter when it is looked up."
)


def get_patient(*, session: Session, mrn: str) -> Patient | None:
    """The patient whose id matches `mrn`, ignoring case and surrounding whitespace."""
    return session.scalar(select(Patient).where(Patient.mrn_key == mrn_key(mrn)))


def get_or_create_patient(*, session: Session, mrn: str) -> Patient:
    """The patient `mrn` names (matched as get_patient does), created under `mrn` as written (NFC) when new.

    Raises ValueError stating the rule when `mrn` is not a patient id (validate_mrn).
    """
    mrn = validate_mrn(mrn)
    patient = get_patient(session=session, mrn=mrn)
    if patient is None:
        patient = Patient(mrn=mrn)
        session.add(patient)
        session.flush()
    return patient


def search_mrns(*, session: Session, prefix: str = "", limit: int = 50) -> list[str]:
    query = select(Patient.mrn).order_by(Patient.mrn).limit(limit)
    if prefix.strip():
        query = query.where(
            or_(
                Patient.mrn_key.startswith(mrn_key(prefix), autoescape=True),
                Patient.mrn.istartswith(prefix.strip(), autoescape=True),
            )
        )
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
    """The patient id as written, in NFC and without surrounding whitespace; raises ValueError with a message
    for the person who typed it (or the system that sent it), the rule included."""
    mrn = unicodedata.normalize("NFC", value or "").strip()
    if not mrn:
        raise ValueError(f"The patient id is empty. {PATIENT_ID_RULE}")
    if len(mrn) > MAX_PATIENT_ID_CHARS:
        raise ValueError(f"The patient id is {len(mrn)} characters long. {PATIENT_ID_RULE}")
    if (bad := next((ch for ch in mrn if ch == "\\" or not ch.isprintable()), None)) is not None:
        raise ValueError(f"The patient id holds {_character(bad)}. {PATIENT_ID_RULE}")
    return mrn


def _character(ch: str) -> str:
    if ch == "\\":
        return "a backslash"
    name = unicodedata.name(ch, "")
    kind = "a control character" if unicodedata.category(ch) == "Cc" else "the character"
    return f"{kind} U+{ord(ch):04X}" + (f" ({name.lower()})" if name else "")
