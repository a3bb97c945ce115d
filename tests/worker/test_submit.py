"""What pages get back from submitting, cancelling and asking after jobs."""

import pytest

from db.jobs import create_job, finish_job, recent_jobs
from db.session import session_scope
from settings import get_settings
from tests.users import make_actor
from worker.submit import cancel_job, submit_job, worker_status


def test_unknown_job_kind_is_refused_before_anything_is_recorded(db_url):
    with pytest.raises(ValueError, match="unknown job kind 'retrain'"):
        submit_job("retrain", {}, actor=make_actor())
    with session_scope() as session:
        assert recent_jobs(session=session) == []


def test_cancel_of_a_finished_job_leaves_it_as_it_was(db_url):
    with session_scope() as session:
        job_id = create_job(session=session, kind="selfcheck", params={}).id
        finish_job(session=session, job_id=job_id, status="succeeded")
    assert cancel_job(job_id, actor=make_actor()) == f"Job {job_id} had already finished (succeeded)."
    assert cancel_job(job_id + 1, actor=make_actor()) == f"Job {job_id + 1} does not exist."


def test_unreachable_redis_is_reported_with_its_address_and_no_password(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:secret@127.0.0.1:1/0")
    get_settings.cache_clear()
    try:
        status = worker_status(timeout_s=0.5)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert status["redis_ok"] is False and status["workers"] == []
    assert "redis://:**@127.0.0.1:1/0" in status["redis_error"] and "secret" not in status["redis_error"]


def test_redis_down_at_submit_fails_the_job_and_its_run_within_seconds(db_url):
    import time

    from db.jobs import recent_jobs
    from db.schema import TrainingRun
    from models.training.config import make_config
    from settings import SAMPLE_DIR
    from worker.celery_app import celery_app
    from worker.submit import QueueUnavailable, submit_training

    saved = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    celery_app.amqp._producer_pool = None
    celery_app._pool = None
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable, match="could not be reached"):
            submit_training(make_config("torch", str(SAMPLE_DIR), "report", epochs=1), actor=make_actor())
        assert time.monotonic() - started < 2
    finally:
        celery_app.conf.broker_url = saved
        celery_app.amqp._producer_pool = None
        celery_app._pool = None
    with session_scope() as session:
        [job] = recent_jobs(session=session)
        run = session.query(TrainingRun).filter_by(job_id=job.id).one()
        assert job.status == "failed" and "could not be reached" in job.error
        assert run.status == "failed" and run.error == job.error


def test_the_same_idempotency_key_submits_one_job(db_url):
    actor = make_actor()
    first = submit_job("selfcheck", {}, actor=actor, idempotency_key="form-1")
    assert submit_job("selfcheck", {}, actor=actor, idempotency_key="form-1") == first
    assert submit_job("selfcheck", {}, actor=actor, idempotency_key="form-2") != first
    with session_scope() as session:
        assert len(recent_jobs(session=session)) == 2
