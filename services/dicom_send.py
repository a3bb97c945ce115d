"""Results going back to the PACS: written to an outbox first (a send), then delivered by C-STORE
(DICOM_DESTINATION) or STOW-RS (DICOMWEB_URL with DICOMWEB_STOW) in a job of their own (worker.submit.submit_sends). A failed delivery is tried again with a
growing pause, shown on the job meanwhile; the files stay in the outbox until the PACS has them all, so nothing
is lost while it is down."""

import logging
import shutil
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy.orm import Session

from db.schema import utcnow
from db.series import create_send, get_send, mark_objects_sent, record_attempt, sends_of_series
from db.session import session_scope
from domain import AuditAction, RetryLater, UserError
from services.auth import audit
from settings import Settings, get_settings, parse_destination

log = logging.getLogger(__name__)

# A C-STORE answered with one of these stored the object (0000 success, Bxxx stored with a warning).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
NETWORK_TIMEOUT_S = 30


class SendFailed(Exception):
    """A delivery that did not complete; the message says what the PACS did or did not do."""


def destination(settings: Settings | None = None) -> str | None:
    """Where results go ("AE@host:port" or the STOW-RS URL), or None when nowhere is configured."""
    settings = settings or get_settings()
    if settings.dicom_destination:
        return settings.dicom_destination
    if settings.dicomweb_stow and settings.dicomweb_url:
        return settings.dicomweb_url
    return None


def outbox_folder(send_id: int, settings: Settings) -> Path:
    return settings.dicom_spool_dir / "outbox" / str(send_id)


def outbox(series_id: int, datasets: Sequence[Dataset], *, what: str) -> int | None:
    """Write the objects to the outbox as a send waiting for its job; returns the send's id, or None when no
    destination is configured (then nothing is written)."""
    settings = get_settings()
    where = destination(settings)
    if where is None or not datasets:
        return None
    objects = [
        {
            "file": f"{ds.SOPInstanceUID}.dcm",
            "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "sent": False,
        }
        for ds in datasets
    ]
    with session_scope() as session:
        send = create_send(
            session=session, series_id=series_id, what=what, destination=where, folder="", objects=objects
        )
        folder = outbox_folder(send.id, settings)
        send.folder = str(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for ds, obj in zip(datasets, objects, strict=True):
            ds.save_as(folder / obj["file"], enforce_file_format=True)
        return send.id


def unsubmitted_sends(series_id: int) -> list[int]:
    """The series' sends still waiting for a job: a send job is made for each (worker.submit.submit_sends)."""
    with session_scope() as session:
        return [s.id for s in sends_of_series(session=session, series_id=series_id) if s.job_id is None]


def attach_job(session: Session, send_id: int, job_id: int) -> None:
    """Record on a send the job that delivers it, in that job's own transaction."""
    row = get_send(session=session, send_id=send_id)
    if row is not None:
        row.job_id = job_id


def retry_delay(attempt: int, settings: Settings) -> float:
    """The pause after the `attempt`-th failure: doubling from DICOM_SEND_RETRY_S, up to DICOM_SEND_RETRY_MAX_S."""
    return min(settings.dicom_send_retry_s * 2 ** max(attempt - 1, 0), settings.dicom_send_retry_max_s)


def run_send(job_id: int, params: dict[str, Any], *, progress: Callable[[int, int, str], None]) -> dict[str, Any]:
    """The send job: deliver what is still unsent; RetryLater to try again after a pause, UserError once the
    attempts are spent."""
    settings = get_settings()
    with session_scope() as session:
        send = get_send(session=session, send_id=int(params["send_id"]))
        if send is None:
            raise UserError(f"send {params['send_id']} no longer exists (its series was deleted)")
        send_id, series_id, where, what = send.id, send.series_id, send.destination, send.what
        folder, objects, attempts, status = Path(send.folder), list(send.objects), send.attempts, send.status
    if status == "sent":
        return {"send_id": send_id, "sent": len(objects), "destination": where}
    unsent = [o for o in objects if not o.get("sent")]
    progress(len(objects) - len(unsent), len(objects), f"sending {what} to {where}")
    delivered: set[str] = set()
    try:
        delivered = deliver([folder / o["file"] for o in unsent], where, settings)
        error = None
    except SendFailed as exc:
        error = str(exc)
    # A send given up on and run again by a person gets a fresh round of attempts.
    attempt = 1 if status == "failed" else attempts + 1
    gave_up = error is not None and attempt >= settings.dicom_send_attempts
    pause = retry_delay(attempt, settings)
    with session_scope() as session:
        if delivered:
            mark_objects_sent(session=session, send_id=send_id, sop_instance_uids=delivered)
        record_attempt(
            session=session,
            send_id=send_id,
            attempt=attempt,
            error=error,
            next_attempt_at=None if error is None or gave_up else utcnow() + timedelta(seconds=pause),
            gave_up=gave_up,
        )
        if error is None:
            audit(
                None,
                AuditAction.RESULTS_SENT,
                target=f"series {series_id}",
                detail=f"{what} to {where} (attempt {attempt})",
                session=session,
            )
    if error is None:
        shutil.rmtree(folder, ignore_errors=True)
        progress(len(objects), len(objects), f"{what} delivered to {where}")
        return {"send_id": send_id, "sent": len(objects), "destination": where, "attempts": attempt}
    if gave_up:
        raise UserError(
            f"{what} could not be delivered to {where} after {attempt} attempts: {error}. The objects are kept; "
            "run this job again to send them."
        )
    at = (utcnow() + timedelta(seconds=pause)).strftime("%H:%M:%S")
    raise RetryLater(
        f"attempt {attempt} of {settings.dicom_send_attempts} failed: {error}; next attempt at {at} UTC", pause
    )


def deliver(files: Sequence[Path], where: str, settings: Settings) -> set[str]:
    """Send the files to `where`; returns the SOP instance UIDs the PACS stored. SendFailed unless all were."""
    datasets = []
    for path in files:
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise SendFailed(f"the outbox file {path} cannot be read ({exc})") from exc
    if where.startswith(("http://", "https://")):
        return _stow(datasets, settings)
    return _c_store(datasets, where, settings)


def _c_store(datasets: Sequence[Dataset], where: str, settings: Settings) -> set[str]:
    from pynetdicom import AE

    called, host, port = parse_destination(where)
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT_S
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not answer"
        raise SendFailed(f"{where} {why}")
    stored, problems = set(), []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(status.Status) if "Status" in status else None
            if code in STORED:
                stored.add(str(ds.SOPInstanceUID))
            else:
                problems.append(
                    f"{ds.SOPInstanceUID}: status {'none (connection lost)' if code is None else hex(code)}"
                )
    finally:
        assoc.release() if assoc.is_established else assoc.abort()
    if problems:
        raise SendFailed(f"{where} did not store {len(problems)} of {len(datasets)} object(s) ({problems[0]})")
    return stored


def _stow(datasets: Sequence[Dataset], settings: Settings) -> set[str]:
    import requests
    from retrying import RetryError

    from services.dicomweb import web_client

    try:
        response = web_client(settings).store_instances(list(datasets))
    except (requests.RequestException, RetryError, OSError, ValueError) as exc:
        raise SendFailed(f"the DICOMweb server did not store the objects ({str(exc)[:200]})") from exc
    failed = response.get("FailedSOPSequence") or []
    if failed:
        raise SendFailed(f"the DICOMweb server refused {len(failed)} of {len(datasets)} object(s)")
    return {str(ds.SOPInstanceUID) for ds in datasets}
