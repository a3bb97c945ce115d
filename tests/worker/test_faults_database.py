"""Another process holds the SQLite write lock past the busy timeout while a service or a job writes: the
caller and the job's record get the reason in words, and the database holds nothing half-written."""

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.jobs import create_job, get_job
from db.schema import AuditEntry, Patient, Prediction, Scan
from db.session import DatabaseBusy, reset_engine, session_scope
from models.data.imaging import DecodedImage, decode_image
from services.diagnosis import save_scan_with_predictions
from services.records import remove_patient
from settings import SAMPLE_DIR, get_settings
from tests.users import make_actor
from worker.jobs import run_job
from worker.tasks import selfcheck

BUSY_TIMEOUT_S = 0.5
BUSY = "The database is busy: another process held its write lock for over 0.5 s. Nothing was saved"


@pytest.fixture
def short_busy_timeout(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DB_BUSY_TIMEOUT_S", str(BUSY_TIMEOUT_S))
    get_settings.cache_clear()
    reset_engine()
    yield db_url
    monkeypatch.undo()
    get_settings.cache_clear()
    reset_engine()


class Writer:
    """Another process's writer: a plain sqlite3 connection holding the write lock with a row not yet committed."""

    def __init__(self, db_url: str) -> None:
        self.connection = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)

    def __enter__(self) -> "Writer":
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.execute("INSERT INTO patients (mrn, created_at) VALUES ('W-1', '2026-01-01')")
        return self

    def release(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def __exit__(self, *_exc: object) -> None:
        self.release()
        self.connection.close()


def sample_image() -> DecodedImage:
    path = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0]
    return decode_image(path.read_bytes(), path.name, max_bytes=2**24, max_pixels=2**24)


def save(decoded: DecodedImage, mrn: str | None) -> None:
    with session_scope() as session:
        save_scan_with_predictions(
            session=session,
            decoded=decoded,
            patient_mrn=mrn,
            source="upload",
            results=[],
            threshold=0.7,
            original_name="scan.jpg",
        )


def snapshot() -> tuple[int, ...]:
    with session_scope() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) for table in (Patient, Scan, Prediction, AuditEntry)
        )


def integrity(db_url: str) -> str:
    with sqlite3.connect(db_url.split("///", 1)[1]) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_service_write_blocked_past_the_busy_timeout_fails_in_words_and_writes_nothing(
    short_busy_timeout: str,
) -> None:
    actor = make_actor()
    save(sample_image(), "P-KEEP")
    with session_scope() as session:
        patient_pk = session.scalar(select(Patient.id).where(Patient.mrn == "P-KEEP"))
    before, files = snapshot(), sorted(get_settings().upload_dir.rglob("*"))
    with Writer(short_busy_timeout):
        for write in (
            lambda: remove_patient(actor, patient_pk=patient_pk, mrn="P-KEEP"),
            lambda: save(sample_image(), "P-NEW"),
            lambda: save(sample_image(), None),
        ):
            started = time.monotonic()
            with pytest.raises(DatabaseBusy, match=BUSY):
                write()
            assert time.monotonic() - started < BUSY_TIMEOUT_S + 3
    # The other writer gave up too: each transaction rolled back whole, and no file was added or removed.
    assert snapshot() == before and sorted(get_settings().upload_dir.rglob("*")) == files
    assert integrity(short_busy_timeout) == "ok"
    remove_patient(actor, patient_pk=patient_pk, mrn="P-KEEP")  # with the lock free, the same delete goes through
    assert snapshot()[:3] == (0, 0, 0)


def test_a_job_whose_write_is_blocked_past_the_busy_timeout_is_failed_with_the_reason(short_busy_timeout: str) -> None:
    with session_scope() as session:
        job_id = create_job(session=session, kind="selfcheck", params={}).id
    before = snapshot()
    writer = Writer(short_busy_timeout)

    def body(reporter: object) -> dict:
        with writer:
            try:
                save(sample_image(), "P-JOB")  # a job's write, while the other process holds the lock
            finally:
                writer.release()  # the other writer is done before the job records its outcome
        return {"saved": True}

    assert run_job(selfcheck, job_id, body)["status"] == "failed"
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
    assert job.status == "failed" and job.error.startswith(BUSY)
    # Nothing of the body's result; the technical detail for admins only (the job log shows it to them).
    assert list(job.result) == ["error_detail"] and "database is locked" in job.result["error_detail"]
    assert snapshot() == before and integrity(short_busy_timeout) == "ok"
    assert not any(Path(p).is_file() for p in get_settings().upload_dir.rglob("*"))
