"""Scan files on disk: each image stored once under upload_dir, addressed by its sha256."""

import hashlib
import os
import tempfile
from pathlib import Path

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from db.schema import Scan
from settings import get_settings

PENDING_UNLINKS = "scan_files_to_unlink"  # key in Session.info


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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def delete_scan_file_if_unused(*, session: Session, sha256: str, path: str | Path) -> bool:
    """After deleting a scan: remove its file once the session commits, if no scan row still refers to it."""
    session.flush()
    if session.scalar(select(Scan.id).where(Scan.sha256 == sha256).limit(1)) is not None:
        return False
    if not Path(path).resolve().is_relative_to(get_settings().upload_dir.resolve()):
        return False  # only files this system stored are ever removed
    _unlink_after_commit(session, Path(path))
    return True


def _unlink_after_commit(session: Session, path: Path) -> None:
    """Remove the file when this session's transaction commits; forget it if the transaction rolls back."""
    pending = session.info.get(PENDING_UNLINKS)
    if pending is None:
        pending = session.info[PENDING_UNLINKS] = []

        def on_commit(_session: Session) -> None:
            while pending:
                pending.pop().unlink(missing_ok=True)

        def on_rollback(_session: Session) -> None:
            pending.clear()

        event.listen(session, "after_commit", on_commit)
        event.listen(session, "after_rollback", on_rollback)
    pending.append(path)
