"""The review queue: every scan awaiting a clinician's read, flagged ones first, with counts per state.

A scan awaits a read until it has one, or while its only reads are reviews of its predictions that disagreed
(migration 0006 kept both). Why a scan is flagged: the brain-MRI check refused it, the models disagree, or the
review rule flagged an answer when it was saved (low confidence); the most urgent reason names it.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, or_, select
from sqlalchemy.orm import Session

from db.reads import conflicting, read_stats
from db.schema import Job, Patient, Prediction, Scan, mrn_key
from domain import FlagReason

# Flagged first, most urgent first; then the rest. Within a reason, the scan waiting longest comes first.
PRIORITY = {reason: rank for rank, reason in enumerate(FlagReason)}
MAX_LISTED = 5000


@dataclass(frozen=True)
class QueueFilters:
    """What the queue is filtered on; empty fields do not filter."""

    job_id: int | None = None
    patient: str | None = None  # part of a patient id
    without_patient: bool = False
    date_from: date | None = None  # when the scan was stored
    date_to: date | None = None  # inclusive
    reason: str | None = None  # a FlagReason value, or "flagged" for any reason but none
    submitted_by: int | None = None  # scans of batch jobs this user started

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason != "flagged" and self.reason not in set(FlagReason):
            raise ValueError(f"Unknown reason {self.reason!r}.")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("The start date is after the end date.")


@dataclass(frozen=True)
class QueueEntry:
    scan_id: int
    reason: str  # a FlagReason value
    created_at: datetime
    patient_mrn: str | None
    job_id: int | None
    original_name: str

    @property
    def flagged(self) -> bool:
        return self.reason != FlagReason.NONE


@dataclass(frozen=True)
class QueueCounts:
    """How many scans are in each state, under the same filters (the reason filter aside)."""

    awaiting: int
    by_reason: dict[str, int]  # awaiting scans per FlagReason value
    without_patient: int  # awaiting scans that have no patient yet
    read: int  # scans whose read is settled

    @property
    def flagged(self) -> int:
        return self.awaiting - self.by_reason.get(FlagReason.NONE, 0)


def _queue_select(*columns: Any) -> tuple[Select[Any], ColumnElement[Any], ColumnElement[bool]]:
    """A select over scans of `columns`, then the scan's flag reason ("reason") and whether it awaits a read
    ("awaiting", 1 or 0); also that reason and that condition, to filter on."""
    answers = (
        select(
            Prediction.scan_id,
            func.count(func.distinct(Prediction.label)).label("labels"),
            func.max(case((Prediction.needs_review.is_(True), 1), else_=0)).label("flagged"),
        )
        .group_by(Prediction.scan_id)
        .subquery("answers")
    )
    stats = read_stats()
    disputed = conflicting(stats)
    reason = case(
        (Scan.refusal.is_not(None), FlagReason.REFUSED.value),
        (answers.c.labels > 1, FlagReason.DISAGREE.value),
        (answers.c.flagged == 1, FlagReason.LOW_CONFIDENCE.value),
        (disputed, FlagReason.CONFLICTING_READS.value),
        else_=FlagReason.NONE.value,
    )
    awaiting = or_(stats.c.scan_id.is_(None), disputed)
    query = (
        select(*columns, reason.label("reason"), case((awaiting, 1), else_=0).label("awaiting"))
        .select_from(Scan)
        .outerjoin(answers, answers.c.scan_id == Scan.id)
        .outerjoin(stats, stats.c.scan_id == Scan.id)
        .outerjoin(Patient, Patient.id == Scan.patient_pk)
    )
    return query, reason, awaiting


def _filtered(query: Select[Any], filters: QueueFilters) -> Select[Any]:
    if filters.job_id is not None:
        query = query.where(Scan.job_id == filters.job_id)
    if filters.without_patient:
        query = query.where(Scan.patient_pk.is_(None))
    if filters.patient and filters.patient.strip():
        query = query.where(
            or_(
                Patient.mrn_key.contains(mrn_key(filters.patient), autoescape=True),
                Patient.mrn.icontains(filters.patient.strip(), autoescape=True),
            )
        )
    if filters.date_from:
        query = query.where(Scan.created_at >= datetime.combine(filters.date_from, time.min))
    if filters.date_to:
        query = query.where(Scan.created_at < datetime.combine(filters.date_to + timedelta(days=1), time.min))
    if filters.submitted_by is not None:
        query = query.where(Scan.job_id.in_(select(Job.id).where(Job.submitted_by == filters.submitted_by)))
    return query


def review_queue(*, session: Session, filters: QueueFilters, limit: int = MAX_LISTED) -> list[QueueEntry]:
    """The scans awaiting a read that match `filters`, in the order they are worked through."""
    query, reason, awaiting = _queue_select(Scan.id, Scan.created_at, Patient.mrn, Scan.job_id, Scan.original_name)
    query = _filtered(query.where(awaiting), filters)
    if filters.reason == "flagged":
        query = query.where(reason != FlagReason.NONE.value)
    elif filters.reason is not None:
        query = query.where(reason == filters.reason)
    rank = case(*((reason == value.value, position) for value, position in PRIORITY.items()), else_=len(PRIORITY))
    rows = session.execute(query.order_by(rank, Scan.created_at, Scan.id).limit(limit)).all()
    return [
        QueueEntry(scan_id=sid, reason=why, created_at=at, patient_mrn=mrn, job_id=job, original_name=name)
        for sid, at, mrn, job, name, why, _ in rows
    ]


def queue_counts(*, session: Session, filters: QueueFilters) -> QueueCounts:
    """Scans awaiting a read, per reason and without a patient, and scans read, under `filters` (reason aside)."""
    query, _, _ = _queue_select(case((Scan.patient_pk.is_(None), 1), else_=0).label("anonymous"))
    scans = _filtered(query, filters).subquery()
    grouped = select(scans.c.anonymous, scans.c.awaiting, scans.c.reason, func.count()).group_by(
        scans.c.anonymous, scans.c.awaiting, scans.c.reason
    )
    counts = {value.value: 0 for value in FlagReason}
    without_patient = read = 0
    for anonymous, awaiting, why, n in session.execute(grouped):
        if not awaiting:
            read += n
            continue
        counts[why] += n
        without_patient += n if anonymous else 0
    return QueueCounts(awaiting=sum(counts.values()), by_reason=counts, without_patient=without_patient, read=read)
