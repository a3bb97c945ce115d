"""Redis stops and starts again, without its data, while one job runs and others wait in the queue: the
worker reconnects, the running job finishes once, and the queued ones are sent again and run once each."""

from collections.abc import Iterator
from datetime import timedelta

import pytest

from db.jobs import get_job
from db.runs import get_run
from db.schema import utcnow
from db.session import session_scope
from models.training.config import make_config
from settings import SAMPLE_DIR, get_settings
from tests.users import make_actor
from worker.celery_app import celery_app
from worker.submit import submit_job, submit_training

pytestmark = pytest.mark.slow


@pytest.fixture
def app_on(redis_server, monkeypatch: pytest.MonkeyPatch) -> Iterator:  # type: ignore[no-untyped-def]
    """This process and the workers it starts use the test's own redis-server."""
    saved = celery_app.conf.broker_url, celery_app.conf.result_backend

    def point(broker: str, backend: str) -> None:
        celery_app.conf.broker_url, celery_app.conf.result_backend = broker, backend
        celery_app.amqp._producer_pool = None
        celery_app._pool = None
        # The result backend (which a sent task subscribes to) is made once per thread: made again for this Redis.
        celery_app._local.__dict__.pop("backend", None)

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    get_settings.cache_clear()
    point(redis_server.url, redis_server.url)
    yield redis_server
    point(*saved)
    monkeypatch.undo()
    get_settings.cache_clear()


def test_redis_restarted_without_its_data_loses_no_job_and_runs_none_twice(
    module_db_url: str, app_on, start_worker, wait_for_job
) -> None:
    worker = start_worker(env={"REDIS_URL": app_on.url})
    cfg = make_config("torch", str(SAMPLE_DIR), "report", epochs=3, batch_size=8, max_images_per_class=10)
    train_id, run_id = submit_training(cfg, actor=make_actor())
    wait_for_job(train_id, statuses=("running",), timeout=120)
    # One worker process, busy with the run: these wait in Redis.
    queued = [submit_job("selfcheck", {}, actor=make_actor()) for _ in range(2)]
    with session_scope() as session:
        assert {get_job(session=session, job_id=i).status for i in queued} == {"queued"}
        # Queued a while ago, as jobs waiting behind a run would be: a message younger than LOST_AFTER_S may still
        # be on its way, and is not sent again.
        for job_id in queued:
            get_job(session=session, job_id=job_id).created_at = utcnow() - timedelta(minutes=5)
    app_on.stop()  # Redis goes down (killed), and its queued and unacknowledged messages with it
    app_on.start()
    training = wait_for_job(train_id, timeout=400)
    assert training.status == "succeeded", training.error
    for job_id in queued:
        job = wait_for_job(job_id, timeout=120)
        assert job.status == "succeeded" and job.attempts == 1, (job.status, job.error)
    with session_scope() as session:
        run = get_run(session=session, run_id=run_id)
        epochs = [e.epoch for e in run.epochs]
    assert training.attempts == 1 and epochs == [1, 2, 3] and run.status == "succeeded"
    assert "sent again 2 queued job(s)" in worker.log()
    worker.stop()


def test_a_job_queued_just_before_redis_lost_its_data_is_sent_again_by_the_next_sweep(
    module_db_url: str, app_on, start_worker, wait_for_job
) -> None:
    """Queued a moment before Redis restarted without its data: too young for the age rule, but older than the
    Redis that is up now, which cannot hold its message. It once stayed queued for ever."""
    from worker.tasks import sweep

    job_id = submit_job("selfcheck", {}, actor=make_actor())
    with session_scope() as session:
        first_id = get_job(session=session, job_id=job_id).celery_id
    app_on.stop()
    app_on.start()
    sweep()
    with session_scope() as session:
        assert get_job(session=session, job_id=job_id).celery_id != first_id
    worker = start_worker(env={"REDIS_URL": app_on.url})
    job = wait_for_job(job_id, timeout=60)
    worker.stop()
    assert job.status == "succeeded" and job.attempts == 1
