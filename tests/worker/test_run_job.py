"""run_job keeps the job record true to what its body did: result, failure text, cancel, retries, heartbeat."""

import threading
import time

import pytest

from db.jobs import create_job, finish_job, get_job, mark_running
from db.session import session_scope
from settings import get_settings
from tests.users import make_actor
from worker import jobs
from worker.jobs import ERROR_DETAIL, UNEXPECTED, UserError, run_job
from worker.submit import cancel_job
from worker.tasks import selfcheck

# The real task object; called outside a worker it has no request id, so only the jobs table is written.
TASK = selfcheck


def _new_job(params: dict | None = None) -> int:
    with session_scope() as session:
        return create_job(session=session, kind="selfcheck", params=params or {}).id


def _job(job_id: int):
    with session_scope() as session:
        return get_job(session=session, job_id=job_id)


def test_successful_body_leaves_result_and_full_progress(db_url):
    job_id = _new_job({"n": 3})

    def body(reporter):
        for step in range(1, reporter.params["n"] + 1):
            reporter.progress(step, reporter.params["n"], f"step {step}")
        return {"done": reporter.params["n"]}

    assert run_job(TASK, job_id, body)["status"] == "succeeded"
    job = _job(job_id)
    assert (job.status, job.result, job.progress_current, job.progress_total) == ("succeeded", {"done": 3}, 3, 3)
    assert job.message == "step 3" and job.attempts == 1 and job.finished_at >= job.started_at


def test_throttled_progress_still_records_the_final_step(db_url):
    job_id = _new_job()

    def body(reporter):
        for step in range(1, 501):
            reporter.progress(step, 1000)
        raise UserError("stopped half way")

    run_job(TASK, job_id, body)
    job = _job(job_id)
    assert (job.status, job.progress_current, job.progress_total) == ("failed", 500, 1000)


def test_an_unexpected_error_fails_the_job_in_words_and_keeps_what_it_said_for_admins(db_url):
    job_id = _new_job()

    def body(reporter):
        raise OSError("[Errno 5] Input/output error: '/srv/brainmri/var/scans/ab.png'")

    run_job(TASK, job_id, body)
    job = _job(job_id)
    assert (job.status, job.error) == ("failed", UNEXPECTED) and "/srv" not in job.error
    assert job.result == {ERROR_DETAIL: "OSError: [Errno 5] Input/output error: '/srv/brainmri/var/scans/ab.png'"}


def test_a_user_error_keeps_its_cause_for_admins(db_url):
    job_id = _new_job()

    def body(reporter):
        try:
            raise FileNotFoundError("/srv/models/cnn.pth")
        except FileNotFoundError as exc:
            raise UserError("Model cnn (version 3) cannot be used: its file is missing.") from exc

    run_job(TASK, job_id, body)
    job = _job(job_id)
    assert job.error == "Model cnn (version 3) cannot be used: its file is missing."
    assert job.result == {ERROR_DETAIL: "FileNotFoundError: /srv/models/cnn.pth"}


def test_user_error_is_stored_as_written(db_url):
    job_id = _new_job()

    def body(reporter):
        raise UserError("/srv/scans is not under an allowed data root")

    run_job(TASK, job_id, body)
    assert _job(job_id).error == "/srv/scans is not under an allowed data root"


def test_cancel_while_running_stops_the_body_at_its_next_check(db_url):
    job_id = _new_job()
    started, steps_done = threading.Event(), []

    def body(reporter):
        for step in range(1, 601):
            reporter.check_cancel()
            steps_done.append(step)
            started.set()
            time.sleep(0.05)
        return {"finished": True}

    runner = threading.Thread(target=run_job, args=(TASK, job_id, body))
    runner.start()
    assert started.wait(timeout=30)
    assert "next checkpoint" in cancel_job(job_id, actor=make_actor())
    runner.join(timeout=60)
    job = _job(job_id)
    assert (job.status, job.result) == ("cancelled", None)
    assert len(steps_done) < 600


def test_finished_job_is_not_run_again(db_url):
    job_id = _new_job()
    with session_scope() as session:
        finish_job(session=session, job_id=job_id, status="succeeded", result={"first": True})
    ran = []
    assert run_job(TASK, job_id, lambda reporter: ran.append(1))["status"] == "succeeded"
    assert ran == [] and _job(job_id).result == {"first": True}


def test_job_whose_worker_was_lost_too_often_is_failed_not_rerun(db_url):
    job_id = _new_job()
    for _ in range(jobs.MAX_ATTEMPTS):
        with session_scope() as session:
            mark_running(session=session, job_id=job_id, worker="lost@host")
    ran = []
    run_job(TASK, job_id, lambda reporter: ran.append(1))
    job = _job(job_id)
    assert ran == [] and job.status == "failed" and f"gave up after {jobs.MAX_ATTEMPTS} attempts" in job.error


def test_redelivered_job_below_the_cap_runs_again(db_url):
    job_id = _new_job()
    with session_scope() as session:
        mark_running(session=session, job_id=job_id, worker="lost@host")
    assert run_job(TASK, job_id, lambda reporter: {"again": True})["status"] == "succeeded"
    assert _job(job_id).attempts == 2


def test_heartbeat_moves_while_a_long_step_runs(db_url, monkeypatch):
    monkeypatch.setenv("HEARTBEAT_INTERVAL_S", "0.05")
    get_settings.cache_clear()
    job_id = _new_job()

    def body(reporter):
        first = _job(job_id).heartbeat_at
        deadline = time.monotonic() + 30
        while _job(job_id).heartbeat_at == first and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"beat": _job(job_id).heartbeat_at > first}

    run_job(TASK, job_id, body)
    assert _job(job_id).result == {"beat": True}


def test_missing_job_is_reported_not_raised(db_url):
    assert run_job(TASK, 999_999, lambda reporter: pytest.fail("must not run"))["status"] == "missing"


def test_progress_goes_on_when_redis_is_down_for_a_moment(db_url, redis_server, monkeypatch):
    from celery import Celery

    monkeypatch.setattr(jobs, "PROGRESS_INTERVAL_S", 0.0)  # every step is sent, the one while Redis is down too
    from worker.celery_app import celery_app

    app = Celery("progress-test", broker=redis_server.url, backend=redis_server.url)
    app.conf.update({k: v for k, v in celery_app.conf.items() if k.startswith("result_backend_transport")})

    @app.task(name="progress-test", bind=True)
    def task(self) -> None:  # only its request and result backend are used
        return None

    job_id = _new_job()

    def body(reporter: jobs.Reporter) -> dict:
        reporter.progress(1, 3)
        redis_server.stop()  # Redis goes away mid-job ...
        started = time.monotonic()
        reporter.progress(2, 3, "Redis is down")
        assert time.monotonic() - started < 5  # ... and the job does not wait long on it
        redis_server.start()  # ... and comes back
        reporter.progress(3, 3)
        return {"done": True}

    task.push_request(id="celery-progress-test")
    try:
        assert run_job(task, job_id, body)["status"] == "succeeded"
    finally:
        task.pop_request()
    job = _job(job_id)
    assert (job.status, job.progress_current, job.result) == ("succeeded", 3, {"done": True})
