"""Two processes writing to one SQLite file at once (the app and a worker) never hit "database is locked"."""

import subprocess
import sys

from sqlalchemy import func, select

from db.schema import Job, Patient
from db.session import session_scope
from settings import ROOT

# Each writer does read-then-write transactions, the kind that fails at once in WAL without BEGIN IMMEDIATE.
WRITER = """
import sys
from db.jobs import create_job, get_job, set_progress
from db.scans import get_or_create_patient
from db.session import session_scope

tag, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    with session_scope() as session:
        job_id = create_job(session=session, kind="selfcheck", params={"writer": tag}).id
    with session_scope() as session:
        assert get_job(session=session, job_id=job_id) is not None
        set_progress(session=session, job_id=job_id, current=i, total=rounds)
        get_or_create_patient(session=session, mrn=f"{tag}-{i % 7}")
"""


def test_two_processes_write_at_once_without_locking_errors(db_url):
    rounds = 150
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, tag, str(rounds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("app", "worker")
    ]
    outcomes = [(writer.wait(timeout=300), writer.stderr.read()) for writer in writers]
    for writer in writers:
        writer.stdout.close()
        writer.stderr.close()
    assert [code for code, _ in outcomes] == [0, 0], "\n".join(err for _, err in outcomes)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2 * rounds
        assert session.scalar(select(func.count()).select_from(Patient)) == 14


def test_reads_do_not_wait_for_a_writer_that_holds_the_lock(db_url):
    import sqlite3
    import time

    from db.jobs import create_job, recent_jobs
    from db.session import read_scope

    with session_scope() as session:
        create_job(session=session, kind="selfcheck", params={})
    # Another process's writer (a batch worker saving a chunk) holds the write lock for a while.
    writer = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO patients (mrn, created_at) VALUES ('W-1', '2026-01-01')")
    try:
        started = time.monotonic()
        with read_scope() as session:
            jobs = recent_jobs(session=session)
        assert len(jobs) == 1 and time.monotonic() - started < 1.0
    finally:
        writer.execute("COMMIT")
        writer.close()
    # A read scope's transaction keeps nothing written in it.
    with read_scope() as session:
        session.add(Patient(mrn="never-kept"))
        session.flush()
    with session_scope() as session:
        assert session.scalar(select(func.count(Patient.id)).where(Patient.mrn == "never-kept")) == 0
