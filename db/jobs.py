"""Query functions for background jobs: the record pages read and workers write."""

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.schema import FINISHED_STATES, Job, TrainingRun, utcnow


def create_job(
    *,
    session: Session,
    kind: str,
    params: dict[str, Any],
    submitted_by: int | None = None,
    idempotency_key: str | None = None,
) -> Job:
    job = Job(kind=kind, params=params, status="queued", submitted_by=submitted_by, idempotency_key=idempotency_key)
    session.add(job)
    session.flush()
    return job


def job_with_key(*, session: Session, idempotency_key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))


def get_job(*, session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def recent_jobs(
    *, session: Session, limit: int = 20, kind: str | None = None, submitted_by: int | None = None
) -> list[Job]:
    """The newest jobs first: all of them, or one kind's, or those one user submitted."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if kind:
        query = query.where(Job.kind == kind)
    if submitted_by is not None:
        query = query.where(Job.submitted_by == submitted_by)
    return list(session.scalars(query))


def set_celery_id(*, session: Session, job_id: int, celery_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(celery_id=celery_id))


def mark_running(*, session: Session, job_id: int, worker: str) -> Job | None:
    """Claim a job for this worker; None when it is already finished or was cancelled while queued."""
    job = session.get(Job, job_id)
    if job is None or job.status in FINISHED_STATES:
        return None
    now = utcnow()
    if job.cancel_requested:
        job.status, job.finished_at, job.message = "cancelled", now, "cancelled before it started"
        return None
    job.status, job.worker, job.heartbeat_at = "running", worker, now
    job.started_at = job.started_at or now
    job.attempts += 1
    job.error = None
    return job


def set_progress(*, session: Session, job_id: int, current: int, total: int, message: str | None = None) -> None:
    values: dict[str, Any] = {"progress_current": current, "progress_total": total, "heartbeat_at": utcnow()}
    if message is not None:
        values["message"] = message
    session.execute(update(Job).where(Job.id == job_id).values(**values))


def heartbeat(*, session: Session, job_id: int) -> None:
    session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(heartbeat_at=utcnow()))


def finish_job(
    *,
    session: Session,
    job_id: int,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    message: str | None = None,
) -> None:
    if status not in FINISHED_STATES:
        raise ValueError(f"not a final status: {status}")
    job = session.get(Job, job_id)
    if job is None:
        return
    job.status, job.finished_at = status, utcnow()
    job.result = result if result is not None else job.result
    job.error = error
    if message is not None:
        job.message = message
    if status == "succeeded" and job.progress_total:
        job.progress_current = job.progress_total
    elif status != "succeeded":
        # A training run attached to a job that never ran (queue down, cancelled while queued) ends with it.
        _settle_run(session=session, job_id=job_id, status=status, error=error)


def defer_job(*, session: Session, job_id: int, celery_id: str, message: str) -> bool:
    """Put a running job back in the queue to run again later under a new Celery id (its body could not finish
    now, e.g. the PACS is down); False when it was cancelled meanwhile, which then ends it."""
    job = session.get(Job, job_id)
    if job is None or job.status != "running":
        return False
    if job.cancel_requested:
        job.status, job.finished_at, job.message = "cancelled", utcnow(), "cancelled while waiting to try again"
        return False
    # Not a lost worker: the count of lost workers starts afresh for the next try.
    job.status, job.celery_id, job.message, job.heartbeat_at, job.attempts = "queued", celery_id, message, None, 0
    return True


def request_cancel(*, session: Session, job_id: int) -> Job | None:
    """Flag a job for cancellation; a queued job is cancelled at once, a running one at its next check."""
    job = session.get(Job, job_id)
    if job is None or job.status in FINISHED_STATES:
        return job
    job.cancel_requested = True
    if job.status == "queued":
        job.status, job.finished_at, job.message = "cancelled", utcnow(), "cancelled before it started"
        _settle_run(session=session, job_id=job_id, status="cancelled", error=None)
    return job


def is_cancel_requested(*, session: Session, job_id: int) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def queued_jobs(*, session: Session, older_than_s: float) -> list[Job]:
    """Jobs still waiting for a worker that were queued more than `older_than_s` seconds ago."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    query = select(Job).where(Job.status == "queued", Job.created_at < cutoff).order_by(Job.id)
    return list(session.scalars(query))


def silent_jobs(*, session: Session, older_than_s: float) -> list[Job]:
    """Running jobs whose last heartbeat is more than `older_than_s` seconds old."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    return list(session.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)))


def queue_again(*, session: Session, job_id: int, celery_id: str, silent_for_s: float, message: str) -> bool:
    """Put a running job whose worker was lost back in the queue under a new Celery id, keeping its attempts;
    False when it beat or finished since it was found silent for `silent_for_s` seconds."""
    cutoff = utcnow() - timedelta(seconds=silent_for_s)
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.heartbeat_at < cutoff)
        .values(status="queued", celery_id=celery_id, message=message)
    )
    return done.rowcount == 1


def settle_stale_jobs(*, session: Session, older_than_s: int) -> int:
    """Mark running jobs whose worker stopped sending heartbeats as failed; returns how many."""
    stale = silent_jobs(session=session, older_than_s=older_than_s)
    for job in stale:
        error = f"the worker {job.worker or ''} stopped responding (last heartbeat {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
        job.status, job.finished_at, job.error = "failed", utcnow(), error.replace("  ", " ")
        _settle_run(session=session, job_id=job.id, status="failed", error=job.error)
    return len(stale)


def _settle_run(*, session: Session, job_id: int, status: str, error: str | None) -> None:
    session.execute(
        update(TrainingRun)
        .where(TrainingRun.job_id == job_id, TrainingRun.status.in_(("queued", "running")))
        .values(status=status, error=error, finished_at=utcnow())
    )


def reset_for_rerun(*, session: Session, job_id: int, celery_id: str) -> Job | None:
    """Put a failed or cancelled job back in the queue's hands under a new Celery id; None if it is not one."""
    job = session.get(Job, job_id)
    if job is None or job.status not in ("failed", "cancelled"):
        return None
    job.status, job.celery_id, job.message = "queued", celery_id, "queued again"
    job.error, job.finished_at, job.heartbeat_at = None, None, None
    # A person chose to run it again: the count of lost workers starts afresh.
    job.cancel_requested, job.attempts = False, 0
    return job
