"""Clinicians' reads of scans: adding one, a scan's reads, each scan's current read, and reads as training labels.

Reads are only ever added (the database refuses to change one): the latest read of a scan is its current read,
the earlier ones stay beside it.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Subquery, and_, func, select
from sqlalchemy.orm import Session

from db.schema import CLASSES, Read, Scan, utcnow
from domain import READ_LABELS, ReadLabel

MAX_READER_CHARS = 128
MAX_NOTE_CHARS = 2000


class ReadError(ValueError):
    """A read that cannot be recorded; the message is shown to the reader as-is."""


@dataclass(frozen=True)
class ReadRow:
    read_id: int
    scan_id: int
    label: str  # a ReadLabel value
    note: str | None
    read_by: str
    read_at: datetime
    migrated: bool  # made by migration 0006 from a review of one model's prediction

    @property
    def label_text(self) -> str:
        return ReadLabel(self.label).label


def _row(read: Read) -> ReadRow:
    return ReadRow(
        read_id=read.id,
        scan_id=read.scan_id,
        label=read.label,
        note=read.note,
        read_by=read.read_by,
        read_at=read.read_at,
        migrated=read.from_prediction_id is not None,
    )


def add_read(
    *, session: Session, scan_id: int, label: str | None, note: str | None, read_by: str, user_id: int | None
) -> ReadRow:
    """Record `read_by`'s read of a scan now; it supersedes the scan's earlier reads, which stay."""
    read_by = (read_by or "").strip()
    note = (note or "").strip() or None
    if label not in READ_LABELS:
        choices = ", ".join(ReadLabel(value).label for value in READ_LABELS)
        raise ReadError(f"Choose the final class of the scan: one of {choices}.")
    if not read_by or len(read_by) > MAX_READER_CHARS:
        raise ReadError(f"A read is signed with a name of 1 to {MAX_READER_CHARS} characters.")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ReadError(f"The note is {len(note):,} characters long; at most {MAX_NOTE_CHARS:,} are kept.")
    if session.get(Scan, scan_id) is None:
        raise ReadError("This scan no longer exists; it may have been deleted.")
    read = Read(scan_id=scan_id, label=label, note=note, read_by=read_by, user_id=user_id, read_at=utcnow())
    session.add(read)
    session.flush()
    return _row(read)


def scan_reads(*, session: Session, scan_ids: Iterable[int]) -> dict[int, list[ReadRow]]:
    """Every read of these scans, oldest first (the last one is current)."""
    ids = list(scan_ids)
    if not ids:
        return {}
    reads: dict[int, list[ReadRow]] = {}
    query = select(Read).where(Read.scan_id.in_(ids)).order_by(Read.scan_id, Read.read_at, Read.id)
    for read in session.scalars(query):
        reads.setdefault(read.scan_id, []).append(_row(read))
    return reads


# Scan ids per IN list: well under any database's limit on bound parameters.
CHUNK = 900


def current_read_of(*, session: Session, scan_ids: Iterable[int]) -> dict[int, ReadRow]:
    """The current (latest) read of each of these scans that has one."""
    ids = sorted(set(scan_ids))
    current: dict[int, ReadRow] = {}
    for start in range(0, len(ids), CHUNK):
        query = select(Read).where(Read.scan_id.in_(ids[start : start + CHUNK])).order_by(Read.read_at, Read.id)
        current.update({read.scan_id: _row(read) for read in session.scalars(query)})
    return current


def current_reads() -> Subquery:
    """Each read scan's latest read: columns scan_id, label, read_by, read_at, note."""
    ranked = select(
        Read.scan_id,
        Read.label,
        Read.read_by,
        Read.read_at,
        Read.note,
        func.row_number().over(partition_by=Read.scan_id, order_by=(Read.read_at.desc(), Read.id.desc())).label("rank"),
    ).subquery()
    return (
        select(ranked.c.scan_id, ranked.c.label, ranked.c.read_by, ranked.c.read_at, ranked.c.note)
        .where(ranked.c.rank == 1)
        .subquery("current_read")
    )


def read_stats() -> Subquery:
    """Per read scan: how many reads, how many distinct classes they give, how many came from migrated reviews."""
    return (
        select(
            Read.scan_id,
            func.count(Read.id).label("reads"),
            func.count(func.distinct(Read.label)).label("labels"),
            func.count(Read.from_prediction_id).label("migrated"),
        )
        .group_by(Read.scan_id)
        .subquery("read_stats")
    )


def conflicting(stats: Subquery) -> Any:
    """Reviews of one scan's predictions that disagreed (kept as reads by migration 0006) and no read since."""
    return and_(stats.c.labels > 1, stats.c.migrated == stats.c.reads)


def read_training_items(*, session: Session) -> list[tuple[str, str]]:
    """(file path, class) of every stored image whose current read gives a tumor class.

    One item per image: when several scans hold the same image (several patients), the latest read decides,
    and an image whose latest read says "not assessable" is left out.
    """
    latest = current_reads()
    rows = session.execute(
        select(Scan.sha256, Scan.file_path, latest.c.label)
        .join(latest, latest.c.scan_id == Scan.id)
        .order_by(latest.c.read_at, Scan.id)
    ).all()
    items: dict[str, tuple[str, str]] = {}
    for sha256, file_path, label in rows:
        items[sha256] = (file_path, label)
    return sorted(item for item in items.values() if item[1] in CLASSES)
