"""The file sweep removes what no row refers to, once past its grace, and nothing else."""

import os
import time
import uuid

from db.jobs import create_job
from db.scans import get_or_create_patient, get_or_create_scan
from db.session import session_scope
from db.storage import store_scan_file
from services.batch_input import batches_dir
from services.cleanup import sweep_files
from settings import get_settings

HOUR = 3600


def aged(path, seconds: float):  # type: ignore[no-untyped-def]
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_orphan_scan_files_and_unused_zips_go_after_their_grace_and_nothing_else(db_url):
    import hashlib

    settings = get_settings()

    def stored(data: bytes):  # type: ignore[no-untyped-def]
        return store_scan_file(data=data, sha256=hashlib.sha256(data).hexdigest(), suffix=".png")

    kept = aged(stored(b"a scan with its row"), 2 * HOUR)
    with session_scope() as session:
        patient = get_or_create_patient(session=session, mrn="P-1")
        get_or_create_scan(
            session=session,
            patient_pk=patient.id,
            sha256=kept.name.split(".")[0],
            file_path=str(kept),
            original_name="a.png",
            source="upload",
            width=1,
            height=1,
            image_format="PNG",
        )
    old_orphan = aged(stored(b"a save that failed after writing its file"), 2 * HOUR)
    new_orphan = stored(b"a save still in progress")
    half_written = old_orphan.parent / ".tmp-abc.png"
    half_written.write_bytes(b"the start of a write that never finished")
    aged(half_written, 2 * HOUR)

    batches = batches_dir(settings)
    running, finished_old, finished_new = (uuid.uuid4().hex for _ in range(3))
    for name in (running, finished_old, finished_new):
        (batches / name).mkdir(parents=True)
        (batches / name / "scan.jpg").write_bytes(b"x")
    for name in (running, finished_old):
        aged(batches / name, 8 * 86400)
    with session_scope() as session:
        create_job(session=session, kind="batch", params={"source": "zip", "upload": running})

    swept = sweep_files()

    assert (swept.scan_files, swept.uploads) == (2, 1)
    assert kept.exists() and new_orphan.exists()
    assert not old_orphan.exists() and not half_written.exists()
    assert (batches / running).exists() and (batches / finished_new).exists()
    assert not (batches / finished_old).exists()
