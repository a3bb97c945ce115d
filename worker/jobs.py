"""The life of a job record around a task body: claim it, report progress, beat, notice cancels, close it."""

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task
from celery.utils import uuid

from db.jobs import defer_job, finish_job, get_job, heartbeat, is_cancel_requested, mark_running, set_progress
from db.session import session_scope
from domain import RetryLater, UserError
from settings import get_settings

__all__ = ["JobCancelled", "Reporter", "RetryLater", "UserError", "run_job"]

log = logging.getLogger(__name__)

# The result key of what lies behind a failed job's message; pages show it to admins only.
ERROR_DETAIL = "error_detail"
UNEXPECTED = (
    "The job stopped on an unexpected error. An admin can see the details on this job, and in the worker's log."
)
# A job whose worker was lost this many times is failed on its next delivery instead of run again.
MAX_ATTEMPTS = 3
# Progress is written at most this often (except the final step): a fast loop must not hog the write lock.
PROGRESS_INTERVAL_S = 0.5


class JobCancelled(Exception):
    """Raised by `Reporter.check_cancel` when someone asked the job to stop."""


class Reporter:
    """Given to a job body: reports progress to the jobs table and to Celery, and checks for a cancel."""

    def __init__(self, task: Task, job_id: int, params: dict[str, Any]) -> None:
        self.task = task
        self.job_id = job_id
        self.params = params
        self._last_write = float("-inf")
        self._pending: tuple[int, int, str | None] | None = None

    def progress(self, current: int, total: int, message: str | None = None) -> None:
        """Record that `current` of `total` steps are done; throttled, but the final step is always written."""
        if message is None and self._pending is not None:
            message = self._pending[2]
        self._pending = (current, total, message)
        if current < total and time.monotonic() - self._last_write < PROGRESS_INTERVAL_S:
            return
        self.flush()

    def flush(self) -> None:
        """Write progress held back by the throttle."""
        if self._pending is None:
            return
        current, total, message = self._pending
        with session_scope() as session:
            set_progress(session=session, job_id=self.job_id, current=current, total=total, message=message)
        self._pending, self._last_write = None, time.monotonic()
        if self.task.request.id:
            try:
                self.task.update_state(state="PROGRESS", meta={"current": current, "total": total})
            except Exception:
                # The database above is the record pages read; Celery's copy is a convenience, and a Redis
                # that is down for a moment must not fail a job that is otherwise going well.
                log.warning("job %s: progress not sent to the result backend", self.job_id, exc_info=True)

    def check_cancel(self) -> None:
        """Raise JobCancelled if a cancel was requested; call it between batches or epochs."""
        with session_scope() as session:
            cancelled = is_cancel_requested(session=session, job_id=self.job_id)
        if cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")


JobBody = Callable[[Reporter], dict[str, Any] | None]


def run_job(task: Task, job_id: int, body: JobBody, *, max_attempts: int = MAX_ATTEMPTS) -> dict[str, Any]:
    """Run `body` as job `job_id` and leave its record succeeded, failed or cancelled, whatever happens.

    A job already finished (or cancelled while queued) is not run again: a redelivered message is harmless.
    """
    worker = task.request.hostname or socket.gethostname()
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:
            log.warning("job %s does not exist; nothing to run", job_id)
            return {"job_id": job_id, "status": "missing"}
        if task.request.id and job.celery_id and task.request.id != job.celery_id:
            # The job was sent again under a new id (its worker or Redis was lost): that message runs it, not this.
            log.info("job %s: message %s was superseded by %s", job_id, task.request.id, job.celery_id)
            return {"job_id": job_id, "status": "superseded"}
        if job.status in ("running", "queued") and job.attempts >= max_attempts:
            # Delivered again while still unfinished: each earlier worker died with it.
            error = f"gave up after {job.attempts} attempts: the worker running it was lost each time"
            finish_job(session=session, job_id=job_id, status="failed", error=error)
            return {"job_id": job_id, "status": "failed"}
        claimed = mark_running(session=session, job_id=job_id, worker=worker)
        if claimed is None:
            return {"job_id": job_id, "status": job.status}
        reporter = Reporter(task, job_id, dict(claimed.params or {}))

    result: dict[str, Any] | None = None
    error: str | None = None
    message: str | None = None
    try:
        with _heartbeat(job_id, get_settings().heartbeat_interval_s):
            result = body(reporter) or {}
        status = "succeeded"
    except RetryLater as exc:
        reporter.flush()
        return _defer(task, job_id, exc)
    except JobCancelled:
        status, message = "cancelled", "cancelled while running"
    except UserError as exc:
        status, error = "failed", str(exc)
        if exc.__cause__ is not None and str(exc.__cause__) != error:
            # What lies behind a person's message (a server path, a library's words) is for admins.
            result = {ERROR_DETAIL: f"{type(exc.__cause__).__name__}: {exc.__cause__}"}
    except Exception as exc:
        log.exception("job %s failed", job_id)
        status, error = "failed", UNEXPECTED
        result = {ERROR_DETAIL: f"{type(exc).__name__}: {exc}"}
    reporter.flush()
    with session_scope() as session:
        finish_job(session=session, job_id=job_id, status=status, result=result, error=error, message=message)
    return {"job_id": job_id, "status": status}


def _defer(task: Task, job_id: int, deferred: RetryLater) -> dict[str, Any]:
    """Queue the job again to run after the delay, under a new message; the old one is then superseded."""
    celery_id = uuid()
    with session_scope() as session:
        if not defer_job(session=session, job_id=job_id, celery_id=celery_id, message=str(deferred)):
            return {"job_id": job_id, "status": "cancelled"}
    try:
        task.apply_async(args=[job_id], task_id=celery_id, countdown=deferred.delay_s)
    except Exception:
        # The job is queued in the database: a worker connecting to the queue again sends it (resend_lost_jobs).
        log.exception("job %s: its next try could not be queued now", job_id)
    return {"job_id": job_id, "status": "queued", "retry_in_s": deferred.delay_s}


@contextmanager
def _heartbeat(job_id: int, interval_s: float) -> Iterator[None]:
    """Beat for the job while the body runs, so a long step between progress reports is not taken for dead."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                with session_scope() as session:
                    heartbeat(session=session, job_id=job_id)
            except Exception:
                # A missed beat is not worth killing the job over; the next one may get through.
                log.exception("heartbeat for job %s failed", job_id)

    thread = threading.Thread(target=beat, name=f"job-{job_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
