"""The periodic file sweep: files no row refers to any more are removed once they are old enough.

A failed save can leave a scan file without its row; a zip unpacked for a job that failed or was cancelled
stays until nobody can re-run it. Celery beat runs this every minute with the stale-job sweep (worker/tasks.py).
A grace period keeps every file that a save or a job in progress may still be about to refer to.
"""

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from db.schema import Job, Scan
from db.session import read_scope
from services.batch_input import batches_dir
from settings import Settings, get_settings


@dataclass(frozen=True)
class Swept:
    scan_files: int
    uploads: int


def _older_than(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime > seconds
    except FileNotFoundError:
        return False


def sweep_files(settings: Settings | None = None, *, now: float | None = None) -> Swept:
    """Remove scan files without a scan row, and unpacked zips no queued or running job uses, past their grace."""
    settings = settings or get_settings()
    now = time.time() if now is None else now
    with read_scope() as session:
        stored = set(session.scalars(select(Scan.sha256)))
        in_use = {
            str(params.get("upload"))
            for params in session.scalars(select(Job.params).where(Job.status.in_(("queued", "running"))))
            if isinstance(params, dict) and params.get("upload")
        }
    scan_files = 0
    for path in settings.upload_dir.glob("??/*"):
        # Content-addressed: the name is the sha256 (".tmp-…" is a write that never finished).
        orphan = path.name.startswith(".tmp-") or path.name.split(".", 1)[0] not in stored
        if path.is_file() and orphan and _older_than(path, settings.orphan_grace_s, now):
            path.unlink(missing_ok=True)
            scan_files += 1
    uploads = 0
    batches = batches_dir(settings)
    for folder in batches.iterdir() if batches.is_dir() else ():
        staging = folder.name.startswith(".tmp-")
        keep_s = settings.orphan_grace_s if staging else settings.keep_uploads_days * 86400
        if folder.name not in in_use and _older_than(folder, keep_s, now):
            shutil.rmtree(folder, ignore_errors=True)
            uploads += 1
    return Swept(scan_files, uploads)
