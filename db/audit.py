"""The audit log: who did what to which record, when, from which session. Entries are only ever inserted.

There is no update or delete function here, and the database refuses both (triggers from migration 0003).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.schema import AuditEntry, utcnow
from domain import AuditAction

MAX_DETAIL_CHARS = 2000


@dataclass(frozen=True)
class Who:
    """The person acting and where from; `user_id` None for a sign-in attempt under an unknown name."""

    user_id: int | None
    username: str | None
    session_id: str | None = None
    client: str | None = None


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else str(text)[:limit]


def record(
    *,
    session: Session,
    action: str,
    who: Who | None,
    target: str | None = None,
    patient_mrn: str | None = None,
    detail: str | None = None,
) -> None:
    """Append one entry in the caller's transaction, so it is kept exactly when the action is."""
    session.add(
        AuditEntry(
            at=utcnow(),
            user_id=who.user_id if who else None,
            username=_clip(who.username, 64) if who else None,
            action=AuditAction(action).value,
            target=_clip(target, 128),
            patient_mrn=_clip(patient_mrn, 64),
            detail=_clip(detail, MAX_DETAIL_CHARS),
            session_id=_clip(who.session_id, 64) if who else None,
            client=_clip(who.client, 64) if who else None,
        )
    )
    session.flush()


@dataclass(frozen=True)
class AuditFilters:
    username: str | None = None
    action: str | None = None
    patient_mrn: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    username: str | None
    action: str
    target: str | None
    patient_mrn: str | None
    detail: str | None
    session_id: str | None
    client: str | None


COLUMNS = ("id", "at", "username", "action", "target", "patient_mrn", "detail", "session_id", "client")


def _filtered(filters: AuditFilters) -> Select:
    query = select(AuditEntry)
    if filters.username:
        query = query.where(AuditEntry.username == filters.username.strip().lower())
    if filters.action:
        query = query.where(AuditEntry.action == filters.action)
    if filters.patient_mrn:
        query = query.where(AuditEntry.patient_mrn == filters.patient_mrn.strip())
    if filters.since is not None:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEntry.at < filters.until)
    return query


def _as_row(entry: AuditEntry) -> AuditRow:
    return AuditRow(*(getattr(entry, name) for name in COLUMNS))


def audit_page(*, session: Session, filters: AuditFilters, page: int = 0, per_page: int = 50) -> list[AuditRow]:
    """One page of matching entries, newest first (keyed on the id index, so page 2,000 costs what page 1 does
    within the filters' own index)."""
    query = _filtered(filters).order_by(AuditEntry.id.desc()).offset(page * per_page).limit(per_page)
    return [_as_row(e) for e in session.scalars(query)]


def count_entries(*, session: Session, filters: AuditFilters) -> int:
    return session.scalar(select(func.count()).select_from(_filtered(filters).subquery())) or 0


def iter_entries(*, session: Session, filters: AuditFilters, chunk: int = 5000) -> Iterator[AuditRow]:
    """Every matching entry, oldest first, read in chunks (an export of 100,000 entries never holds them all)."""
    last_id = 0
    while True:
        query = _filtered(filters).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(chunk)
        entries = list(session.scalars(query))
        if not entries:
            return
        yield from (_as_row(e) for e in entries)
        last_id = entries[-1].id


def failures_in_a_row(*, session: Session, username: str, within_s: int) -> int:
    """Failed sign-ins under a name since its last success, counting only the last `within_s` seconds."""
    since = utcnow() - timedelta(seconds=within_s)
    last_success = session.scalar(
        select(func.max(AuditEntry.at)).where(AuditEntry.username == username, AuditEntry.action == AuditAction.SIGN_IN)
    )
    start = max(since, last_success) if last_success else since
    return (
        session.scalar(
            select(func.count(AuditEntry.id)).where(
                AuditEntry.username == username,
                AuditEntry.action == AuditAction.SIGN_IN_FAILED,
                AuditEntry.at >= start,
            )
        )
        or 0
    )


def client_failures(*, session: Session, client: str, within_s: int) -> int:
    """Failed sign-ins from one client address within the last `within_s` seconds, whatever the name."""
    since = utcnow() - timedelta(seconds=within_s)
    return (
        session.scalar(
            select(func.count(AuditEntry.id)).where(
                AuditEntry.client == client, AuditEntry.action == AuditAction.SIGN_IN_FAILED, AuditEntry.at >= since
            )
        )
        or 0
    )
