"""Scan files on disk: each image stored once under upload_dir, addressed by its sha256."""

import errno
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from db.schema import Scan
from db.session import session_scope
from domain import UserError
from settings import get_settings

log = logging.getLogger(__name__)

PENDING_UNLINKS = "scan_files_to_unlink"  # key in Session.info
# PostgreSQL advisory lock key under which scan files are written and removed (any constant; "SCAN" in ASCII).
SCAN_FILES_LOCK = 0x5343414E


class StorageFull(UserError):
    """The disk (or quota) under a storage folder is full; nothing was kept."""


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def storage_full(folder: Path, what: str) -> StorageFull:
    """The message for a write that ran out of space under `folder`."""
    return StorageFull(f"There is no space left under {folder}: {what}. Free some space and try again.")


def scan_file_path(*, sha256: str, suffix: str) -> Path:
    return get_settings().upload_dir / sha256[:2] / f"{sha256}{suffix}"


def store_scan_file(*, data: bytes, sha256: str, suffix: str) -> Path:
    """Write the file once (atomically); storing the same content again returns the existing path."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError("sha256 does not match the data to store")
    path = scan_file_path(sha256=sha256, suffix=suffix)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename: a reader never sees a half-written file, and two writers
    # of the same content both end with the same complete file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise storage_full(get_settings().upload_dir, "the scan was not stored") from exc
        raise
    return path


def lock_scan_files(*, session: Session) -> None:
    """Hold until the session's transaction ends the lock under which scan files are stored and removed.

    A save that finds its file in place then commits its row before any delete can remove that file, and a
    delete that finds no row for a file removes it before any save can find it.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCAN_FILES_LOCK})
    else:
        session.connection()  # SQLite: the transaction begins with BEGIN IMMEDIATE, the database's write lock


def delete_scan_file_if_unused(*, session: Session, sha256: str, path: str | Path) -> bool:
    """After deleting a scan: remove its file once the session commits, if no scan row still refers to it."""
    session.flush()
    if session.scalar(select(Scan.id).where(Scan.sha256 == sha256).limit(1)) is not None:
        return False
    if not Path(path).resolve().is_relative_to(get_settings().upload_dir.resolve()):
        return False  # only files this system stored are ever removed
    _unlink_after_commit(session, sha256, Path(path))
    return True


def _unlink_after_commit(session: Session, sha256: str, path: Path) -> None:
    """Remove the file when this session's transaction commits; forget it if the transaction rolls back."""
    pending = session.info.get(PENDING_UNLINKS)
    if pending is None:
        pending = session.info[PENDING_UNLINKS] = []

        def on_commit(_session: Session) -> None:
            while pending:
                _remove_if_unused(*pending.pop())

        def on_rollback(_session: Session) -> None:
            pending.clear()

        event.listen(session, "after_commit", on_commit)
        event.listen(session, "after_rollback", on_rollback)
    pending.append((sha256, path))


def _remove_if_unused(sha256: str, path: Path) -> None:
    """Unlink a deleted scan's file unless a save committed a row for it since; under the scan files' lock."""
    try:
        with session_scope() as session:
            lock_scan_files(session=session)
            if session.scalar(select(Scan.id).where(Scan.sha256 == sha256).limit(1)) is None:
                path.unlink(missing_ok=True)
    except Exception:
        # The rows are already gone; the periodic sweep removes the file once its grace has passed.
        log.exception("could not remove the scan file %s; the sweep will", path)
