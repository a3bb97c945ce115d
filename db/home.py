"""What a person's own Home page lists: the patients they worked on lately."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.schema import AuditEntry, Patient, Scan
from domain import AuditAction

# The actions that mean a person worked on a patient's record (not, say, a refused attempt).
PATIENT_WORK = (AuditAction.UPLOAD, AuditAction.PATIENT_VIEWED, AuditAction.REVIEW, AuditAction.EXPORT)


@dataclass(frozen=True)
class RecentPatient:
    mrn: str
    last_worked_at: datetime  # UTC: when this user last saved, opened, reviewed or exported their record
    scans: int
    last_scan_at: datetime | None


def recent_patients(*, session: Session, user_id: int, limit: int = 10) -> list[RecentPatient]:
    """The patients `user_id` worked on, most recent first, as the audit log records it; patients since
    deleted are left out."""
    worked = (
        select(AuditEntry.patient_mrn.label("mrn"), func.max(AuditEntry.at).label("last_at"))
        .where(
            AuditEntry.user_id == user_id,
            AuditEntry.patient_mrn.is_not(None),
            AuditEntry.action.in_([action.value for action in PATIENT_WORK]),
        )
        .group_by(AuditEntry.patient_mrn)
        .subquery()
    )
    query = (
        select(Patient.mrn, worked.c.last_at, func.count(Scan.id), func.max(Scan.created_at))
        .join(worked, worked.c.mrn == Patient.mrn)
        .outerjoin(Scan, Scan.patient_pk == Patient.id)
        .group_by(Patient.id, Patient.mrn, worked.c.last_at)
        .order_by(worked.c.last_at.desc(), Patient.mrn)
        .limit(limit)
    )
    return [RecentPatient(mrn, last_at, scans, last_scan) for mrn, last_at, scans, last_scan in session.execute(query)]
