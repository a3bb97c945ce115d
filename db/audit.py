"""The audit log: who did what to which record, when, from which session. Entries are only ever inserted.

There is no update or delete function here, and the database refuses updates, deletes, replacing inserts and
(PostgreSQL) TRUNCATE (triggers from migrations 0003 and 0004); on PostgreSQL the app's own role may only insert
and read here (db/migrate.py). Each entry carries the sha256 of the one before: `python -m db.audit verify`
walks the chain and names the first entry that was changed, removed or slipped in.
"""

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, or_, select, text
from sqlalchemy.orm import Session

from db.schema import AuditEntry, utcnow
from db.secrets import hidden
from domain import AuditAction

MAX_DETAIL_CHARS = 2000
# Any fixed number: every transaction that appends an entry on PostgreSQL takes this advisory lock until it
# commits, so entries join the chain one at a time (SQLite's write lock already does that).
CHAIN_LOCK = 26_0004
HASHED_FIELDS = ("at", "user_id", "username", "action", "target", "patient_mrn", "detail", "session_id", "client")


@dataclass(frozen=True)
class Who:
    """The person acting and where from; `user_id` None for a sign-in attempt under a name nobody has (then
    `username` is already hidden). `session_id` is the browser session's own id: it is stored hashed."""

    user_id: int | None
    username: str | None
    session_id: str | None = None
    client: str | None = None


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else str(text)[:limit]


def describe(value: object) -> str:
    """A value as an entry's detail reads: a dataclass or a mapping as "name value; name value" of what is set
    (filters, a job's parameters), never a Python repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, Mapping):
        items = dict(value)
    else:
        return str(value)
    parts = []
    for name, item in items.items():
        if item is None or item == "" or (isinstance(item, list | tuple | set) and not item):
            continue
        if isinstance(item, bool):
            item = "yes" if item else "no"
        elif isinstance(item, datetime):
            item = item.isoformat(sep=" ", timespec="minutes") + " UTC"
        elif isinstance(item, list | tuple | set):
            item = ", ".join(str(i) for i in item)
        parts.append(f"{str(name).replace('_', ' ')} {item}")
    return "; ".join(parts) or "none"


def chain_hash(prev_hash: str | None, fields: Sequence[object]) -> str:
    """The sha256 of an entry: its fields (HASHED_FIELDS, in order) and the hash of the entry before it."""

    def plain(value: object) -> object:
        return value.isoformat(sep=" ", timespec="microseconds") if isinstance(value, datetime) else value

    payload = json.dumps([prev_hash, *(plain(v) for v in fields)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _last_hash(session: Session) -> str | None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    return session.scalar(select(AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1))


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
    values = {
        "at": utcnow(),
        "user_id": who.user_id if who else None,
        "username": _clip(who.username, 64) if who else None,
        "action": AuditAction(action).value,
        "target": _clip(target, 128),
        "patient_mrn": _clip(patient_mrn, 64),
        "detail": _clip(detail, MAX_DETAIL_CHARS),
        "session_id": hidden(who.session_id, 24, session=session) if who and who.session_id else None,
        "client": _clip(who.client, 64) if who else None,
    }
    prev_hash = _last_hash(session)
    entry_hash = chain_hash(prev_hash, [values[name] for name in HASHED_FIELDS])
    session.add(AuditEntry(**values, prev_hash=prev_hash, entry_hash=entry_hash))
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


def _filtered(filters: AuditFilters, session: Session) -> Select:
    query = select(AuditEntry)
    if filters.username:
        # A name nobody has is stored hidden: the same name typed here finds those entries too.
        name = filters.username.strip().lower()
        query = query.where(or_(AuditEntry.username == name, AuditEntry.username == hidden(name, session=session)))
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
    query = _filtered(filters, session).order_by(AuditEntry.id.desc()).offset(page * per_page).limit(per_page)
    return [_as_row(e) for e in session.scalars(query)]


def count_entries(*, session: Session, filters: AuditFilters) -> int:
    return session.scalar(select(func.count()).select_from(_filtered(filters, session).subquery())) or 0


def iter_entries(*, session: Session, filters: AuditFilters, chunk: int = 5000) -> Iterator[AuditRow]:
    """Every matching entry, oldest first, read in chunks (an export of 100,000 entries never holds them all)."""
    last_id = 0
    while True:
        query = _filtered(filters, session).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(chunk)
        entries = list(session.scalars(query))
        if not entries:
            return
        yield from (_as_row(e) for e in entries)
        last_id = entries[-1].id


@dataclass(frozen=True)
class ChainCheck:
    entries: int
    problem: str | None  # None: every entry is as it was appended

    def __str__(self) -> str:
        if self.problem is None:
            return f"audit log intact: {self.entries} entries, each chained to the one before"
        return f"audit log altered: {self.problem}"


def verify_chain(*, session: Session, chunk: int = 5000) -> ChainCheck:
    """Recompute every entry's hash in id order: the first entry whose fields or link do not match is named."""
    columns = [getattr(AuditEntry, name) for name in ("id", *HASHED_FIELDS, "prev_hash", "entry_hash")]
    last_id, prev_hash, count = 0, None, 0
    while True:
        rows = session.execute(select(*columns).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(chunk))
        rows = rows.all()
        if not rows:
            return ChainCheck(count, None)
        for row in rows:
            entry_id, *fields, stored_prev, stored_hash = row
            if stored_prev != prev_hash:
                return ChainCheck(
                    count, f"entry {entry_id} does not link to the entry before it: an entry was removed or slipped in"
                )
            if chain_hash(stored_prev, fields) != stored_hash:
                return ChainCheck(count, f"entry {entry_id} was changed after it was written")
            prev_hash, count = stored_hash, count + 1
        last_id = rows[-1][0]


def main(argv: list[str] | None = None) -> int:
    from db.session import read_scope

    parser = argparse.ArgumentParser(prog="python -m db.audit", description="Check the audit log's hash chain.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("verify", help="recompute every entry's hash; exit 1 at the first that does not match")
    parser.parse_args(argv)
    with read_scope() as session:
        check = verify_chain(session=session)
    print(check, file=sys.stdout if check.problem is None else sys.stderr)
    return 0 if check.problem is None else 1


if __name__ == "__main__":
    sys.exit(main())
