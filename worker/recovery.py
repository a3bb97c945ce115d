"""Jobs whose worker or queue message was lost: settled when silent too long, sent again otherwise.

Run when a worker connects to Redis and by the minute-by-minute sweep (worker/tasks.py).
"""

import json
import logging
from collections.abc import Collection
from datetime import timedelta

import redis
from celery.utils import uuid

from db.jobs import queue_again, queued_jobs, set_celery_id, settle_stale_jobs, silent_jobs
from db.schema import utcnow
from db.session import session_scope
from settings import get_settings
from worker.celery_app import TASK_QUEUES, celery_app
from worker.submit import TASK_NAMES, send_to_worker

log = logging.getLogger(__name__)


# A queued job's message goes out milliseconds after its row is written; one older than this and missing from
# Redis was lost (Redis restarted without its data), not still on its way.
LOST_AFTER_S = 30


def _queued_message_ids(client: redis.Redis) -> set[str]:
    """The Celery ids of every message Redis holds: waiting in a queue, or delivered and not yet acknowledged."""
    ids = set()
    for queue in {*TASK_QUEUES.values()}:
        # kombu keeps one list per queue and priority step: "prediction", "prediction\x06\x163", ...
        for key in client.scan_iter(match=f"{queue}*"):
            if client.type(key) == b"list":
                ids |= {json.loads(raw).get("headers", {}).get("id") for raw in client.lrange(key, 0, -1)}
    for raw in client.hvals("unacked"):
        ids.add(json.loads(raw)[0].get("headers", {}).get("id"))
    return ids - {None}


def resend_lost_jobs() -> list[int]:
    """Send again every queued job whose message Redis no longer holds; returns their ids.

    A job queued before Redis last started is lost whatever its age (Redis cannot hold its message); one queued
    since, once it is LOST_AFTER_S old (its message may still be on its way before that). Run when a worker
    connects and by every sweep: the jobs table is the record, so a Redis that lost its data loses no job.
    """
    client = redis.Redis.from_url(get_settings().redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        present = _queued_message_ids(client)
        # Redis counts its uptime in whole seconds: it started at most a second after this. A message sent in
        # that second is still there, and one that is not is sent again (the first, if it turns up, is ignored).
        redis_started = utcnow() - timedelta(seconds=int(client.info("server")["uptime_in_seconds"]) - 1)
    finally:
        client.close()
    settled_before = utcnow() - timedelta(seconds=LOST_AFTER_S)
    with session_scope() as session:
        lost = [
            (job.id, job.kind)
            for job in queued_jobs(session=session, older_than_s=0)
            if job.celery_id not in present and (job.created_at < redis_started or job.created_at < settled_before)
        ]
        fresh = {job_id: uuid() for job_id, _ in lost}
        for job_id, celery_id in fresh.items():
            set_celery_id(session=session, job_id=job_id, celery_id=celery_id)
    for job_id, kind in lost:
        send_to_worker(TASK_NAMES[kind], job_id, fresh[job_id])
    return [job_id for job_id, _ in lost]


def orphaned_after_s() -> float:
    """A running job silent this long (two missed heartbeats) whose worker answers no ping was lost with it."""
    return 2 * get_settings().heartbeat_interval_s


def restore_orphaned_jobs(*, me: str | None = None, running_here: Collection[str] = ()) -> list[int]:
    """Send again the running jobs whose worker is gone (killed, or its machine went down); returns their ids.

    Its message stays unacknowledged in Redis for the visibility timeout (two days), so without this a job whose
    whole worker died would wait that long. A job is taken for lost once it missed two heartbeats and its worker
    answers no ping; a worker starting under the name of one that died (`make run` names it worker@host) knows
    without asking that the jobs of that name it is not running itself were the dead one's.
    The job continues where it stopped, under its id; the old message, if ever delivered, is ignored.
    """
    with session_scope() as session:
        jobs = silent_jobs(session=session, older_than_s=orphaned_after_s())
        silent = [(job.id, job.kind, job.worker, job.celery_id) for job in jobs]
    gone = []
    for job_id, kind, worker, celery_id in silent:
        if celery_id in running_here:
            continue
        if worker != me and worker and celery_app.control.ping(destination=[worker], timeout=1.0):
            continue
        gone.append((job_id, kind, worker))
    sent = []
    for job_id, kind, worker in gone:
        celery_id = uuid()
        with session_scope() as session:
            message = f"sent again: its worker {worker} was lost"
            if not queue_again(
                session=session, job_id=job_id, celery_id=celery_id, silent_for_s=orphaned_after_s(), message=message
            ):
                continue
        send_to_worker(TASK_NAMES[kind], job_id, celery_id)
        sent.append(job_id)
    return sent


def recover_jobs(*, me: str | None, running_here: Collection[str] = ()) -> int:
    """Settle the running jobs silent too long to continue, then send again those whose worker was lost (see
    restore_orphaned_jobs); returns how many were settled."""
    with session_scope() as session:
        settled = settle_stale_jobs(session=session, older_than_s=get_settings().job_stale_after_s)
    if settled:
        log.warning("settled %d job(s) whose worker stopped responding", settled)
    if restored := restore_orphaned_jobs(me=me, running_here=running_here):
        log.warning("sent again %d job(s) whose worker was lost: %s", len(restored), restored)
    return settled
