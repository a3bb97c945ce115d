"""What pages call to start, cancel and watch background jobs; the jobs table is created here first."""

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis
from celery.utils import uuid
from kombu.utils.url import maybe_sanitize_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.audit import describe
from db.jobs import (
    create_job,
    finish_job,
    get_job,
    job_with_key,
    request_cancel,
    reset_for_rerun,
    set_celery_id,
    settle_stale_jobs,
)
from db.session import session_scope
from domain import AuditAction
from models.training.config import TrainConfig
from services.auth import Actor, audit, require_admin, require_signed_in
from settings import get_settings
from worker.celery_app import TASK_QUEUES, celery_app

if TYPE_CHECKING:
    from services.dicom_intake import Intake

log = logging.getLogger(__name__)

# Job kind (as stored in jobs.kind) -> Celery task name.
TASK_NAMES = {
    "selfcheck": "brainmri.selfcheck",
    "train": "brainmri.train",
    "batch": "brainmri.batch_predict",
    "series": "brainmri.series_predict",
    "send": "brainmri.dicom_send",
}


# A training job is not run again under its id (its run would start over); these jobs resume or repeat harmlessly.
RERUNNABLE_KINDS = ("batch", "selfcheck", "train", "series", "send")


class QueueUnavailable(Exception):
    """The job queue (Redis) could not be reached, so the job was not submitted."""


# What each kind of job is audited as when it is submitted.
SUBMIT_ACTIONS = {"train": AuditAction.TRAINING_STARTED, "batch": AuditAction.BATCH_STARTED}


def submit_job(
    kind: str,
    params: dict[str, Any],
    *,
    actor: Actor | None,
    with_job: Callable[[Session, int], None] | None = None,
    idempotency_key: str | None = None,
) -> int:
    """Record a queued job, submitted by a signed-in `actor`, and hand it to the worker; returns the job id.

    `with_job(session, job_id)` writes, in the job's own transaction, whatever else the task will look up (e.g.
    its training run): both are recorded or neither. A job already submitted with the same `idempotency_key`
    (a double click) is returned as it is, not made again.
    """
    if kind not in TASK_NAMES:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(TASK_NAMES)}")
    actor = require_signed_in(actor, f"start a {kind} job")
    name = TASK_NAMES[kind]
    celery_id = uuid()
    if idempotency_key is not None and (earlier := _submitted(idempotency_key)) is not None:
        return earlier
    # The row exists (and is committed) before the message, so a worker never gets an id it cannot find.
    try:
        with session_scope() as session:
            job_id = _create(session, kind, params, actor, idempotency_key, celery_id)
            if with_job is not None:
                with_job(session, job_id)
    except IntegrityError:
        # The same submission, a moment earlier in another request: that one is the job.
        if idempotency_key is None or (earlier := _submitted(idempotency_key)) is None:
            raise
        return earlier
    send_to_worker(name, job_id, celery_id)
    return job_id


def submit_unattended(
    kind: str, params: dict[str, Any], *, with_job: Callable[[Session, int], None] | None = None
) -> int:
    """Record and send a job no person asked for (a series the DICOM listener completed, results going back to
    the PACS); returns the job id. Only an admin may cancel or re-run it.

    With the queue down the job stays queued, not failed: nobody is there to submit it again, and a worker that
    connects sends it (resend_lost_jobs), so nothing received is lost."""
    name, celery_id = TASK_NAMES[kind], uuid()
    with session_scope() as session:
        job_id = create_job(session=session, kind=kind, params=params).id
        set_celery_id(session=session, job_id=job_id, celery_id=celery_id)
        if with_job is not None:
            with_job(session, job_id)
    try:
        celery_app.send_task(name, args=[job_id], task_id=celery_id, queue=TASK_QUEUES[name], retry=False)
    except Exception:
        log.warning("job %s stays queued: the queue at %s did not answer", job_id, _redis_location(), exc_info=True)
    return job_id


def _submitted(idempotency_key: str) -> int | None:
    with session_scope() as session:
        job = job_with_key(session=session, idempotency_key=idempotency_key)
        return job.id if job else None


def _create(session: Session, kind: str, params: dict[str, Any], actor: Actor, key: str | None, celery_id: str) -> int:
    job_id = create_job(session=session, kind=kind, params=params, submitted_by=actor.user_id, idempotency_key=key).id
    set_celery_id(session=session, job_id=job_id, celery_id=celery_id)
    if kind in SUBMIT_ACTIONS:
        audit(actor, SUBMIT_ACTIONS[kind], target=f"job {job_id}", detail=describe(params)[:500], session=session)
    return job_id


def send_to_worker(name: str, job_id: int, celery_id: str) -> None:
    """Hand a recorded job to the worker; when the queue is down the job is failed with the reason."""
    try:
        # No retries: a person is waiting on the page, and the job's row says what happened either way.
        celery_app.send_task(name, args=[job_id], task_id=celery_id, queue=TASK_QUEUES[name], retry=False)
    except Exception as exc:
        error = f"the job queue at {_redis_location()} could not be reached: {exc}"
        with session_scope() as session:
            finish_job(session=session, job_id=job_id, status="failed", error=error)
        raise QueueUnavailable(error) from exc


def _may_control(actor: Actor | None, job_id: int, what: str) -> Actor:
    """The actor when they may cancel or re-run this job: an admin any job, a clinician the ones they submitted."""
    actor = require_signed_in(actor, f"{what} jobs")
    if actor.is_admin:
        return actor
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        if job is not None and job.submitted_by == actor.user_id and job.kind != "train":
            return actor
    return require_admin(actor, f"{what} another user's job (job {job_id})")


def cancel_job(job_id: int, *, actor: Actor | None) -> str:
    """Ask a job to stop; returns a sentence saying what happened, for the page to show.

    A clinician may cancel the jobs they submitted, an admin any job; anyone else gets NotAllowed (audited).
    """
    actor = _may_control(actor, job_id, "cancel")
    with session_scope() as session:
        job = request_cancel(session=session, job_id=job_id)
        if job is None:
            return f"Job {job_id} does not exist."
        status, celery_id, was_running = job.status, job.celery_id, job.status == "running"
        if was_running or status == "cancelled":
            audit(actor, AuditAction.JOB_CANCELLED, target=f"job {job_id}", detail=job.kind, session=session)
    if was_running:
        return f"Job {job_id} will stop at its next checkpoint."
    if status == "cancelled" and celery_id:
        try:
            # Never terminate=True: killing a process mid-write could leave files or rows half-done.
            celery_app.control.revoke(celery_id)
        except Exception:
            # The DB record is already cancelled, and a worker skips cancelled jobs, so the revoke is a courtesy.
            pass
        return f"Job {job_id} cancelled."
    return f"Job {job_id} had already finished ({status})."


def requeue_job(job_id: int, *, actor: Actor | None) -> str:
    """Run a failed or cancelled job again under the same id; returns a sentence for the page to show.

    A batch job skips the files it already did, so a job whose worker was killed ends with each file done once.
    """
    actor = _may_control(actor, job_id, "re-run")
    celery_id, stale_after = uuid(), get_settings().job_stale_after_s
    with session_scope() as session:
        # A job whose worker died still reads "running" until its heartbeat is old enough to settle it.
        settle_stale_jobs(session=session, older_than_s=stale_after)
        job = get_job(session=session, job_id=job_id)
        if job is None:
            return f"Job {job_id} does not exist."
        kind, status = job.kind, job.status
        if kind not in RERUNNABLE_KINDS:
            return f"Job {job_id} is a {kind} job, which is not run again under the same id: start a new one."
        if status == "running":
            return (
                f"Job {job_id} is still running. If its worker died, the job can be run again once it has sent "
                f"no heartbeat for {stale_after} s; it is then marked failed."
            )
        if reset_for_rerun(session=session, job_id=job_id, celery_id=celery_id) is None:
            state = "has succeeded" if status == "succeeded" else f"is {status}"
            return f"Job {job_id} {state}: only a failed or cancelled job can be run again."
        audit(actor, AuditAction.JOB_REQUEUED, target=f"job {job_id}", detail=kind, session=session)
    send_to_worker(TASK_NAMES[kind], job_id, celery_id)
    return f"Job {job_id} is queued again."


def worker_status(timeout_s: float = 1.0) -> dict[str, Any]:
    """{"redis_ok": bool, "redis_error": str | None, "workers": [names of workers answering a ping]}."""
    client = redis.Redis.from_url(get_settings().redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        return {"redis_ok": False, "redis_error": f"{_redis_location()}: {exc}", "workers": []}
    finally:
        client.close()
    replies = celery_app.control.ping(timeout=timeout_s) or []
    return {"redis_ok": True, "redis_error": None, "workers": sorted(name for reply in replies for name in reply)}


def _redis_location() -> str:
    """The Redis URL with its password masked, safe to show on a page."""
    return maybe_sanitize_url(get_settings().redis_url)


def submit_training(
    cfg: TrainConfig,
    *,
    actor: Actor | None,
    use_reviewed: bool = False,
    idempotency_key: str | None = None,
    dataset_health: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Queue a training run (admins only: NotAllowed otherwise, audited); returns (job id, run id).

    The job, its run and the dataset check it was started on (`dataset_health`) are written in one transaction.
    """
    from services.training import add_recorded_run

    require_admin(actor, "train models")
    run_ids: list[int] = []
    params = {"framework": cfg.framework, "preset": cfg.preset, "data_dir": cfg.data_dir}

    def add_run(session: Session, job_id: int) -> None:
        run_ids.append(
            add_recorded_run(
                session=session, cfg=cfg, use_reviewed=use_reviewed, job_id=job_id, dataset_health=dataset_health
            )
        )

    job_id = submit_job("train", params, actor=actor, with_job=add_run, idempotency_key=idempotency_key)
    if not run_ids:  # the same submission made the job before: its run is that job's
        from db.runs import get_run_for_job

        with session_scope() as session:
            run = get_run_for_job(session=session, job_id=job_id)
            if run is None:
                raise LookupError(f"job {job_id} has no training run")
            run_ids.append(run.id)
    return job_id, run_ids[0]


def submit_batch(
    *,
    source: dict[str, str],
    patient_mode: str,
    patient_mrn: str | None = None,
    model_version_ids: list[int] | None = None,
    actor: Actor | None,
    idempotency_key: str | None = None,
) -> int:
    """Queue a batch prediction over a checked folder or zip (see services.batch_input); returns the job id.

    The models are fixed now (the active ones unless chosen), so a re-run uses the same versions even if
    another model was activated in between. Raises BatchInputError with a message for the page.
    """
    from db.batches import batch_models
    from services.batch_input import BatchInputError, BatchParams, check_patient_mode, discard_upload

    given = BatchParams.of(source)
    if idempotency_key is not None and (earlier := _submitted(idempotency_key)) is not None:
        if given.source == "zip":
            discard_upload(str(given.upload), settings=get_settings())  # this click's copy of the same zip
        return earlier

    mrn = check_patient_mode(patient_mode, patient_mrn)
    with session_scope() as session:
        try:
            versions = batch_models(session=session, version_ids=model_version_ids)
        except LookupError as exc:
            raise BatchInputError(str(exc)) from exc
        ids = [v.id for v in versions]
    params = replace(given, patient_mode=patient_mode, patient_mrn=mrn, model_version_ids=ids)
    return submit_job("batch", params.stored(), actor=actor, idempotency_key=idempotency_key)


def submit_series(*, series_id: int | None = None, pull: dict[str, str] | None = None, actor: Actor | None) -> int:
    """Queue the prediction of a complete series (`series_id`), or of one to pull from the DICOMweb server first
    (`pull`: its study and series UIDs); returns the job id. The active models are fixed now, as a batch's are.
    `actor` None: the DICOM listener completed the series."""
    from db.batches import batch_models
    from db.series import set_series_status

    with session_scope() as session:
        try:
            ids: list[int] | None = [v.id for v in batch_models(session=session, version_ids=None)]
        except LookupError:
            ids = None  # the job then fails with the reason, on the series' record
    params: dict[str, Any] = {"series_id": series_id, "pull": pull, "model_version_ids": ids}

    def mark(session: Session, job_id: int) -> None:
        if series_id is not None:
            set_series_status(session=session, series_id=series_id, status="queued", job_id=job_id)

    if actor is None:
        return submit_unattended("series", params, with_job=mark)
    return submit_job("series", params, actor=actor, with_job=mark)


def queue_series(series_id: int, *, actor: Actor | None, origin: str) -> int:
    """Send a complete series to the prediction queue as one job, audited; returns the job id. `actor` is the
    person who asked (None for the listener), `origin` says where the series came from."""
    from services.dicom_intake import audit_queued

    job_id = submit_series(series_id=series_id, actor=actor)
    audit_queued(series_id, job_id, actor=actor, origin=origin)
    return job_id


def queue_complete_series() -> list[int]:
    """Queue every series that received nothing for DICOM_SERIES_IDLE_S (the listener's pass); their ids."""
    from services.dicom_intake import complete_series

    queued = []
    for series_id, sender in complete_series():
        try:
            queue_series(series_id, actor=None, origin=f"the DICOM listener (calling AE {sender})")
        except Exception:
            # The database may be busy for a moment; the series stays complete and is queued at the next pass.
            log.exception("series %s could not be queued; trying again at the next pass", series_id)
            continue
        queued.append(series_id)
    return queued


def submit_intake(intake: "Intake", *, actor: Actor | None, origin: str) -> dict[int, int]:
    """Queue each series a hand upload or a folder added slices to; series id -> job id."""
    return {sid: queue_series(sid, actor=actor, origin=origin) for sid, new in intake.series.items() if new}


def submit_pull(actor: Actor | None, *, study_uid: str, series_uid: str) -> int:
    """Send a series of the DICOMweb server to the prediction queue: its job retrieves it (WADO-RS), then predicts
    it as any received series; returns the job id. The request is audited."""
    from services.dicomweb import audit_pull, check_pull

    pull = check_pull(actor, study_uid=study_uid, series_uid=series_uid)
    job_id = submit_series(pull=pull, actor=actor)
    audit_pull(actor, job_id, pull)
    return job_id


def submit_sends(series_id: int) -> list[int]:
    """A send job for each of the series' sends still without one (its results in the outbox); their job ids."""
    from services.dicom_send import attach_job, unsubmitted_sends

    return [
        submit_unattended(
            "send", {"send_id": send_id}, with_job=lambda session, job_id, s=send_id: attach_job(session, s, job_id)
        )
        for send_id in unsubmitted_sends(series_id)
    ]


def submit_amended_report(
    series_id: int, *, label: str, author: str, at: "datetime", note: str | None = None
) -> int | None:
    """Send the PACS an amended report of a series with a clinician's read (services.series.amended_report);
    returns the send job's id, None when no destination is configured."""
    from services.series import amended_report

    if amended_report(series_id, label=label, author=author, at=at, note=note) is None:
        return None
    jobs = submit_sends(series_id)
    return jobs[-1] if jobs else None
