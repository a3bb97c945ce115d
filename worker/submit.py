"""What pages call to start, cancel and watch background jobs; the jobs table is created here first."""

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
from celery.utils import uuid
from kombu.utils.url import maybe_sanitize_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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

# Job kind (as stored in jobs.kind) -> Celery task name.
TASK_NAMES = {
    "selfcheck": "brainmri.selfcheck",
    "train": "brainmri.train",
    "batch": "brainmri.batch_predict",
}


# A training job is not run again under its id (its run would start over); these jobs resume or repeat harmlessly.
RERUNNABLE_KINDS = ("batch", "selfcheck", "train")


class QueueUnavailable(Exception):
    """The job queue (Redis) could not be reached, so the job was not submitted."""


# What each kind of job is audited as when it is submitted.
SUBMIT_ACTIONS = {"train": AuditAction.TRAINING_STARTED, "batch": AuditAction.BATCH_STARTED}


def submit_job(
    kind: str,
    params: dict[str, Any],
    *,
    actor: Actor | None,
    before_send: Callable[[int], None] | None = None,
    idempotency_key: str | None = None,
) -> int:
    """Record a queued job, submitted by a signed-in `actor`, and hand it to the worker; returns the job id.

    `before_send(job_id)` creates whatever else the task will look up (e.g. its training run) first. A job
    already submitted with the same `idempotency_key` (a double click) is returned as it is, not made again.
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
    except IntegrityError:
        # The same submission, a moment earlier in another request: that one is the job.
        if idempotency_key is None or (earlier := _submitted(idempotency_key)) is None:
            raise
        return earlier
    if before_send is not None:
        before_send(job_id)
    send_to_worker(name, job_id, celery_id)
    return job_id


def _submitted(idempotency_key: str) -> int | None:
    with session_scope() as session:
        job = job_with_key(session=session, idempotency_key=idempotency_key)
        return job.id if job else None


def _create(session: Session, kind: str, params: dict[str, Any], actor: Actor, key: str | None, celery_id: str) -> int:
    job_id = create_job(session=session, kind=kind, params=params, submitted_by=actor.user_id, idempotency_key=key).id
    set_celery_id(session=session, job_id=job_id, celery_id=celery_id)
    if kind in SUBMIT_ACTIONS:
        audit(actor, SUBMIT_ACTIONS[kind], target=f"job {job_id}", detail=str(params)[:500], session=session)
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
    cfg: TrainConfig, *, actor: Actor | None, use_reviewed: bool = False, idempotency_key: str | None = None
) -> tuple[int, int]:
    """Queue a training run (admins only: NotAllowed otherwise, audited); returns (job id, run id)."""
    from services.training import create_recorded_run

    require_admin(actor, "train models")
    run_ids: list[int] = []
    params = {"framework": cfg.framework, "preset": cfg.preset, "data_dir": cfg.data_dir}
    job_id = submit_job(
        "train",
        params,
        actor=actor,
        before_send=lambda job_id: run_ids.append(
            create_recorded_run(cfg=cfg, use_reviewed=use_reviewed, job_id=job_id)
        ),
        idempotency_key=idempotency_key,
    )
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
