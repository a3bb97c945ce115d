"""Celery tasks: each takes a job id, runs its body under `run_job`, and leaves the outcome in the jobs table.

Heavy imports (torch, tensorflow) belong inside task bodies: the worker's parent process imports this
module before it forks, and must stay light and free of framework thread pools.
"""

import logging
from typing import Any

from celery import Task, bootsteps

from worker.celery_app import celery_app
from worker.jobs import run_job
from worker.recovery import recover_jobs, resend_lost_jobs
from worker.selfcheck import run_selfcheck

log = logging.getLogger(__name__)


@celery_app.task(name="brainmri.selfcheck", bind=True, acks_late=True, reject_on_worker_lost=True)
def selfcheck(self: Task, job_id: int) -> dict[str, Any]:
    """Check that the database, the storage folders and the active models' files are usable."""
    return run_job(self, job_id, run_selfcheck)


# Acknowledged late: a worker lost mid-run hands the job to another, which continues the run from its last
# finished epoch under the same run id.
@celery_app.task(name="brainmri.train", bind=True, acks_late=True, reject_on_worker_lost=True)
def train(self: Task, job_id: int) -> dict[str, Any]:
    """Train the model of the training run attached to this job."""
    from worker.training import run_training_job

    return run_job(self, job_id, run_training_job)


# Acknowledged late: a worker lost mid-batch hands the job to another, which skips the files already done.
@celery_app.task(name="brainmri.batch_predict", bind=True, acks_late=True, reject_on_worker_lost=True)
def batch_predict(self: Task, job_id: int) -> dict[str, Any]:
    """Predict every image of the job's folder or zip with its models, into each patient's record."""
    from worker.batch import run_batch_job

    return run_job(self, job_id, run_batch_job)


# Acknowledged late, like a batch: a re-delivered series job predicts only the slices not yet recorded.
@celery_app.task(name="brainmri.series_predict", bind=True, acks_late=True, reject_on_worker_lost=True)
def series_predict(self: Task, job_id: int) -> dict[str, Any]:
    """Predict a DICOM series' slices, give the series its answer and queue its results for the PACS."""
    from worker.series import run_series_job

    return run_job(self, job_id, run_series_job)


# A send that fails is queued again by the job itself (domain.RetryLater, see worker.jobs), with a growing pause.
@celery_app.task(name="brainmri.dicom_send", bind=True, acks_late=True, reject_on_worker_lost=True)
def dicom_send(self: Task, job_id: int) -> dict[str, Any]:
    """Deliver a series' report and heatmap captures to the PACS."""
    from worker.series import run_send_job

    return run_job(self, job_id, run_send_job)


@celery_app.task(name="brainmri.sweep", bind=True, ignore_result=True)
def sweep(self: Task) -> int:
    """Settle or send again the jobs whose worker died, send again the queued jobs whose messages Redis lost, and
    remove files nothing refers to any more (sent by every worker's beat, SWEEP_EVERY_S); returns how many jobs
    were settled."""
    from services.cleanup import sweep_files
    from services.dicom_intake import sweep_spool
    from services.unsaved import sweep_expired

    settled = recover_jobs(me=self.request.hostname)
    if resent := resend_lost_jobs():
        log.warning("sent again %d queued job(s) the queue had lost: %s", len(resent), resent)
    swept = sweep_files()
    if swept.scan_files or swept.uploads:
        log.info("removed %d orphan scan file(s) and %d unpacked zip(s)", swept.scan_files, swept.uploads)
    if spooled := sweep_spool():
        log.info("removed %d DICOM folder(s) of deleted series", spooled)
    if expired := sweep_expired():
        log.info("removed the expired unsaved Diagnose results of %d user(s)", expired)
    return settled


class RecoverJobsOnConnect(bootsteps.StartStopStep):
    """Each time the worker connects to Redis (at start, and again after Redis was down): settle or send again
    the jobs whose worker died, and send again the queued jobs whose messages Redis lost (a restart without its
    data)."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, c) -> None:  # type: ignore[no-untyped-def]
        from celery.worker.state import active_requests, reserved_requests

        try:
            recover_jobs(me=c.hostname, running_here={r.id for r in (*active_requests, *reserved_requests)})
            resent = resend_lost_jobs()
        except Exception:
            log.exception("could not check the queue for lost jobs")
            return
        if resent:
            log.warning("sent again %d queued job(s) the queue had lost: %s", len(resent), resent)


celery_app.steps["consumer"].add(RecoverJobsOnConnect)
