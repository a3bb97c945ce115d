"""The periodic file sweep: files no row refers to any more are removed once they are old enough.

A scan file goes only under the lock saves and deletes take, so a save in progress keeps it (docs/design/jobs.md).
"""

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from db.schema import Job, Scan
from db.session import read_scope, session_scope
from db.storage import lock_scan_files
from services.batch_input import BatchParams, batches_dir
from settings import Settings, get_settings

# Files looked at again and removed per hold of the scan files' lock: saves wait for it meanwhile.
LOCKED_BATCH = 200


@dataclass(frozen=True)
class Swept:
    scan_files: int
    uploads: int


def _older_than(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime > seconds
    except FileNotFoundError:
        return False


def _digest(path: Path) -> str | None:
    """The sha256 a scan file is named by; None for ".tmp-…", a write that never finished."""
    return None if path.name.startswith(".tmp-") else path.name.split(".", 1)[0]


def _remove_unreferenced(paths: list[Path]) -> int:
    """Remove the files no scan row refers to, deciding again under the scan files' lock; returns how many."""
    with session_scope() as session:
        lock_scan_files(session=session)
        digests = {d for d in map(_digest, paths) if d is not None}
        referenced = set(session.scalars(select(Scan.sha256).where(Scan.sha256.in_(digests))))
        unreferenced = [path for path in paths if _digest(path) not in referenced]
        for path in unreferenced:
            path.unlink(missing_ok=True)
    return len(unreferenced)


def sweep_files(settings: Settings | None = None, *, now: float | None = None) -> Swept:
    """Remove scan files without a scan row, and unpacked zips no queued or running job uses, past their grace."""
    settings = settings or get_settings()
    now = time.time() if now is None else now
    with read_scope() as session:
        stored = set(session.scalars(select(Scan.sha256)))
        unfinished = session.scalars(select(Job.params).where(Job.status.in_(("queued", "running"))))
        uploads = (BatchParams.of(params).upload for params in unfinished if isinstance(params, dict))
        in_use = {str(upload) for upload in uploads if upload}
    candidates = [
        path
        for path in settings.upload_dir.glob("??/*")
        if path.is_file() and _digest(path) not in stored and _older_than(path, settings.orphan_grace_s, now)
    ]
    scan_files = sum(
        _remove_unreferenced(candidates[i : i + LOCKED_BATCH]) for i in range(0, len(candidates), LOCKED_BATCH)
    )
    uploads = 0
    batches = batches_dir(settings)
    for folder in batches.iterdir() if batches.is_dir() else ():
        staging = folder.name.startswith(".tmp-")
        keep_s = settings.orphan_grace_s if staging else settings.keep_uploads_days * 86400
        if folder.name not in in_use and _older_than(folder, keep_s, now):
            shutil.rmtree(folder, ignore_errors=True)
            uploads += 1
    return Swept(scan_files, uploads)
