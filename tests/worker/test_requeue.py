"""Which jobs a person may run again under the same id, and what they are told otherwise."""

from db.jobs import create_job, finish_job, get_job, mark_running
from db.session import session_scope
from settings import get_settings
from tests.users import make_actor
from worker.submit import requeue_job


def make_job(kind: str, status: str) -> int:
    with session_scope() as session:
        job_id = create_job(session=session, kind=kind, params={}).id
        if status == "running":
            mark_running(session=session, job_id=job_id, worker="w1")
        elif status != "queued":
            finish_job(session=session, job_id=job_id, status=status)
    return job_id


def status_of(job_id: int) -> str:
    with session_scope() as session:
        return get_job(session=session, job_id=job_id).status


def test_a_running_job_is_not_run_twice(db_url) -> None:
    job_id = make_job("batch", "running")
    assert "is still running" in requeue_job(job_id, actor=make_actor()) and status_of(job_id) == "running"


def test_a_succeeded_job_is_not_run_again(db_url) -> None:
    job_id = make_job("batch", "succeeded")
    assert (
        requeue_job(job_id, actor=make_actor())
        == f"Job {job_id} has succeeded: only a failed or cancelled job can be run again."
    )
    assert status_of(job_id) == "succeeded"


def test_a_failed_training_job_is_queued_again_under_its_id(db_url) -> None:
    job_id = make_job("train", "failed")
    assert requeue_job(job_id, actor=make_actor()) == f"Job {job_id} is queued again." and status_of(job_id) == "queued"
    assert requeue_job(job_id + 1, actor=make_actor()) == f"Job {job_id + 1} does not exist."


def test_the_periodic_sweep_settles_a_job_whose_worker_died(db_url) -> None:
    from datetime import timedelta

    from db.schema import Job, utcnow
    from worker.celery_app import celery_app
    from worker.tasks import sweep

    job_id = make_job("batch", "running")
    with session_scope() as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(hours=1)
    assert sweep() == 1 and status_of(job_id) == "failed"
    every = get_settings().sweep_every_s
    assert celery_app.conf.beat_schedule["settle-stale-jobs"] == {
        "task": "brainmri.sweep",
        "schedule": every,
        "options": {"expires": every},
    }


def test_the_periodic_sweep_sends_again_a_job_whose_worker_is_gone(db_url) -> None:
    from datetime import timedelta

    from db.schema import Job, utcnow
    from worker.recovery import orphaned_after_s
    from worker.tasks import sweep

    job_id = make_job("batch", "running")  # by worker w1, which answers no ping
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.heartbeat_at = utcnow() - timedelta(seconds=orphaned_after_s() + 5)
        first_id = job.celery_id
    assert sweep() == 0  # not settled: silent for less than JOB_STALE_AFTER_S
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
    assert job.status == "queued" and job.celery_id not in (None, first_id)
    assert job.message == "sent again: its worker w1 was lost"


def test_the_periodic_sweep_sends_again_a_queued_job_whose_message_redis_lost(db_url) -> None:
    """Without a worker connecting again (the only time this was looked for), the sweep finds it."""
    import json
    from datetime import timedelta

    import redis

    from db.schema import utcnow
    from worker.submit import submit_job
    from worker.tasks import sweep

    lost, kept = submit_job("selfcheck", {}, actor=make_actor()), submit_job("selfcheck", {}, actor=make_actor())
    client = redis.Redis.from_url(get_settings().redis_url)
    with session_scope() as session:
        first_ids = {job_id: get_job(session=session, job_id=job_id).celery_id for job_id in (lost, kept)}
        for job_id in (lost, kept):
            get_job(session=session, job_id=job_id).created_at = utcnow() - timedelta(minutes=5)
    for raw in client.lrange("prediction", 0, -1):
        if json.loads(raw)["headers"]["id"] == first_ids[lost]:
            assert client.lrem("prediction", 1, raw) == 1
    sweep()
    with session_scope() as session:
        now = {job_id: get_job(session=session, job_id=job_id).celery_id for job_id in (lost, kept)}
    queued = {json.loads(raw)["headers"]["id"] for raw in client.lrange("prediction", 0, -1)}
    assert now[kept] == first_ids[kept] and now[lost] != first_ids[lost]
    assert {now[lost], now[kept]} <= queued
