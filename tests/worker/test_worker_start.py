"""What a worker does with jobs left over from before it started (skips cancelled ones, settles dead ones), and
with those whose worker dies while it runs: started as `make worker` starts it, it runs beat inside it, so the
sweep recovers them without a beat process of its own."""

import json
import re
import shlex
from datetime import timedelta

import pytest
import redis

from db.jobs import create_job, get_job, mark_running
from db.schema import utcnow
from db.session import session_scope
from settings import ROOT, get_settings
from tests.users import make_actor
from worker.submit import cancel_job, submit_job, worker_status

pytestmark = pytest.mark.slow


def test_job_cancelled_while_queued_is_never_run(module_db_url, start_worker, wait_for_job):
    assert worker_status()["workers"] == []  # nobody may take the job before it is cancelled
    job_id = submit_job("selfcheck", {}, actor=make_actor())
    assert cancel_job(job_id, actor=make_actor()) == f"Job {job_id} cancelled."
    worker = start_worker()
    # The queue is first in, first out: once a later job has run, the cancelled one has been delivered.
    later = wait_for_job(submit_job("selfcheck", {}, actor=make_actor()))
    worker.stop()
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
    assert later.status == "succeeded"
    assert (job.status, job.started_at, job.attempts) == ("cancelled", None, 0)


def test_starting_worker_settles_jobs_whose_worker_died(module_db_url, start_worker, wait_for_job):
    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params={}).id
        mark_running(session=session, job_id=job_id, worker="gone@elsewhere")
        get_job(session=session, job_id=job_id).heartbeat_at = utcnow() - timedelta(hours=2)
    worker = start_worker()
    job = wait_for_job(job_id, statuses=["failed"], timeout=30)
    worker.stop()
    assert "gone@elsewhere stopped responding" in job.error


def test_a_starting_worker_sends_again_the_queued_jobs_redis_lost(module_db_url, start_worker, wait_for_job):
    assert worker_status()["workers"] == []
    lost = submit_job("selfcheck", {}, actor=make_actor())
    kept = submit_job("selfcheck", {}, actor=make_actor())
    client = redis.Redis.from_url(get_settings().redis_url)
    with session_scope() as session:
        lost_celery_id = get_job(session=session, job_id=lost).celery_id
        for job_id in (lost, kept):
            get_job(session=session, job_id=job_id).created_at = utcnow() - timedelta(minutes=5)
    # Redis forgets the first job's message, as after a restart without its data.
    for raw in client.lrange("prediction", 0, -1):
        if json.loads(raw)["headers"]["id"] == lost_celery_id:
            assert client.lrem("prediction", 1, raw) == 1
    worker = start_worker()
    assert wait_for_job(lost, timeout=60).status == "succeeded"
    assert wait_for_job(kept, timeout=60).status == "succeeded"
    worker.stop()
    with session_scope() as session:
        # Each ran once: the kept one from its own message, the lost one from the message sent again.
        assert get_job(session=session, job_id=lost).celery_id != lost_celery_id
        assert get_job(session=session, job_id=lost).attempts == get_job(session=session, job_id=kept).attempts == 1


def worker_command_lines() -> dict[str, list[str]]:
    """The `celery` arguments each way of starting the system runs, from `celery` up to the worker's name."""
    makefile = (ROOT / "Makefile").read_text()
    make_worker = re.search(r"^worker:.*\n(?:#.*\n)*\t(.+)$", makefile, re.MULTILINE)
    assert make_worker is not None
    run_sh = next(x for x in (ROOT / "scripts" / "run.sh").read_text().splitlines() if "celery -A" in x)
    compose_worker = (ROOT / "docker-compose.yml").read_text().split("\n  worker:\n", 1)[1]
    command = next(x for x in compose_worker.splitlines() if x.strip().startswith("command:"))
    lines = {
        "make worker": shlex.split(make_worker.group(1))[1:],
        "make run": shlex.split(run_sh)[1:],
        "docker compose": json.loads(command.split(":", 1)[1])[1:],
    }
    return {name: arguments[: arguments.index("-n")] for name, arguments in lines.items()}


def test_every_way_of_starting_a_worker_runs_beat_inside_it_and_none_starts_beat_alone() -> None:
    lines = worker_command_lines()
    assert len({tuple(arguments) for arguments in lines.values()}) == 1, lines
    assert "-B" in lines["make worker"]
    scripts = [(ROOT / "Makefile").read_text(), (ROOT / "scripts" / "run.sh").read_text()]
    assert not any(re.search(r"celery\S* -A \S+ beat", text) for text in scripts)
    assert '"beat"' not in (ROOT / "docker-compose.yml").read_text()  # no `celery beat` service


def test_a_job_whose_worker_dies_is_recovered_by_the_sweep_of_a_worker_started_as_make_worker(
    module_db_url, start_worker, wait_for_job
):
    """The worker is up and connected before the job's worker dies: only its own beat's sweep can find the job."""
    from worker.recovery import orphaned_after_s

    worker = start_worker(env={"SWEEP_EVERY_S": "2"}, arguments=worker_command_lines()["make worker"])
    with session_scope() as session:
        job_id = create_job(session=session, kind="selfcheck", params={}).id
        mark_running(session=session, job_id=job_id, worker="gone@elsewhere")
        get_job(session=session, job_id=job_id).heartbeat_at = utcnow() - timedelta(seconds=orphaned_after_s() + 5)
    job = wait_for_job(job_id, timeout=45)
    worker.stop()
    assert job.status == "succeeded" and job.message != "running"
    assert "sent again 1 job(s) whose worker was lost" in worker.log()
