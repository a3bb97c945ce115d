"""DICOM instances coming in (from the listener, a DICOMweb pull or an upload): checked and split into slices
(services/dicom_instances.py), staged until their series is predicted and grouped by series; a complete series
goes to the prediction queue.

Only the header is read here. Pixels are decoded later, in the series job, through the same path as every
upload (services/batch.py), so a hostile instance costs the listener no more than reading its header.
"""

import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.scans import get_or_create_patient, validate_mrn
from db.schema import DicomSeries, Patient, SeriesSlice, utcnow
from db.series import count_slices, find_slice, get_series, idle_series, series_with_uid, set_series_status
from db.session import session_scope
from db.storage import is_disk_full, storage_full
from domain import AuditAction, UserError
from models.data.files import write_whole
from models.data.imaging import DICOM_MAGIC_OFFSET, header_study_date
from services.auth import Actor, audit
from services.dicom_instances import InstanceRefused, SliceFile, int_or_none, read_instance, slices_of
from settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """What one instance added: to which series, and how many new slices (0 when all were there already)."""

    series_id: int
    series_uid: str
    new_slices: int


def spool_folder(series_id: int, settings: Settings) -> Path:
    return settings.dicom_spool_dir / "series" / str(series_id)


def _write(path: Path, data: bytes) -> None:
    """Write a staged file whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, lambda handle: handle.write(data))


def _patient(session: Session, ds: Dataset) -> Patient | None:
    """The patient the header's PatientID names, as written there; None when it names none."""
    raw = str(ds.get("PatientID", "") or "")
    if not raw.strip():
        return None
    try:
        return get_or_create_patient(session=session, mrn=validate_mrn(raw))
    except ValueError as exc:
        raise InstanceRefused(f"its PatientID {raw[:64]!r} is not a usable patient id: {exc}") from exc


def _series_for(session: Session, ds: Dataset, *, source: str, sender: str | None) -> DicomSeries:
    """The series this instance belongs to, made when it is the first; refused when it contradicts the series."""
    series = series_with_uid(session=session, series_uid=ds.SeriesInstanceUID)
    patient = _patient(session, ds)
    if series is None:
        series = DicomSeries(
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            patient_pk=patient.id if patient else None,
            modality="MR",
            series_description=str(ds.get("SeriesDescription", "") or "").strip()[:256] or None,
            series_number=int_or_none(ds.get("SeriesNumber")),
            study_date=header_study_date(ds),
            source=source,
            sender=(sender or "")[:128] or None,
            status="receiving",
        )
        session.add(series)
        session.flush()
        return series
    if series.study_uid != ds.StudyInstanceUID:
        raise InstanceRefused("its series was received before under another study (StudyInstanceUID differs)")
    if series.patient_pk != (patient.id if patient else None):
        raise InstanceRefused("its PatientID differs from that of the instances of its series received before")
    return series


def receive(data: bytes, *, source: str, sender: str | None, settings: Settings | None = None) -> Received:
    """Check one instance, stage its new slices and record them under their series; InstanceRefused when it
    cannot be used. An instance received again adds nothing."""
    settings = settings or get_settings()
    ds = read_instance(data, settings=settings)
    slices = slices_of(ds, data)
    for attempt in range(2):
        written: list[Path] = []
        try:
            with session_scope() as session:
                series = _series_for(session, ds, source=source, sender=sender)
                new = _stage(session, series, ds, slices, settings, written)
                return Received(series.id, series.series_uid, new)
        except IntegrityError:
            # Another association recorded the same series or slice a moment earlier: the second try finds it.
            _remove(written)
            if attempt:
                raise
        except OSError as exc:
            _remove(written)
            if is_disk_full(exc):
                full = storage_full(settings.dicom_spool_dir, "the instance was not stored")
                raise InstanceRefused(str(full), out_of_resources=True) from exc
            raise
        except BaseException:
            _remove(written)
            raise
    raise AssertionError("unreachable")


def _stage(
    session: Session, series: DicomSeries, ds: Dataset, slices: list[SliceFile], settings: Settings, written: list[Path]
) -> int:
    """Write and record the slices the series does not hold yet (their paths into `written`); how many."""
    new = [
        s
        for s in slices
        if find_slice(session=session, series_id=series.id, sop_instance_uid=ds.SOPInstanceUID, frame=s.frame) is None
    ]
    if not new:
        return 0
    if count_slices(session=session, series_id=series.id) + len(new) > settings.dicom_max_series_slices:
        raise InstanceRefused(
            f"its series already holds the most slices a series may ({settings.dicom_max_series_slices})"
        )
    for item in new:
        path = spool_folder(series.id, settings) / f"{ds.SOPInstanceUID}-{item.frame}.dcm"
        _write(path, item.data)
        written.append(path)
        session.add(_slice_row(series.id, ds, item, path))
    series.last_received_at = utcnow()
    if series.status != "queued":
        # More slices for a series already answered: it is answered again once they stop coming.
        series.status = "receiving"
    return len(new)


def _slice_row(series_id: int, ds: Dataset, item: SliceFile, path: Path) -> SeriesSlice:
    return SeriesSlice(
        series_id=series_id,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        frame=item.frame,
        instance_number=item.instance_number,
        position=item.position,
        status="received",
        staged_file=str(path),
        needs_review=False,
    )


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def audit_queued(series_id: int, job_id: int, *, actor: Actor | None, origin: str) -> None:
    """Record that a series went to the prediction queue: received (`actor` None: the listener completed it) or
    sent by a person; `origin` says where it came from."""
    with session_scope() as session:
        series = get_series(session=session, series_id=series_id)
        slices = count_slices(session=session, series_id=series_id)
        mrn = series.patient.mrn if series is not None and series.patient is not None else None
        action = AuditAction.SERIES_RECEIVED if actor is None else AuditAction.SERIES_QUEUED
        audit(
            actor,
            action,
            target=f"series {series_id}",
            patient_mrn=mrn,
            detail=f"{slices} slice(s) from {origin}; job {job_id}",
            session=session,
        )


def complete_series(settings: Settings | None = None) -> list[tuple[int, str]]:
    """The series that received nothing for DICOM_SERIES_IDLE_S, with who sent them: (series id, sender)."""
    settings = settings or get_settings()
    with session_scope() as session:
        return [(s.id, s.sender or s.source) for s in idle_series(session=session, idle_s=settings.dicom_series_idle_s)]


def reopen_if_incomplete(*, session: Session, series_id: int) -> None:
    """After a job: slices that arrived while it ran make the series receiving again, to be queued once idle."""
    series = get_series(session=session, series_id=series_id)
    if series is not None and any(s.status == "received" for s in series.slices):
        set_series_status(session=session, series_id=series_id, status="receiving")


@dataclass(frozen=True)
class Intake:
    """What a hand upload or a server folder gave: the new slices of each series it touched (series id -> how
    many), and every file that was refused, with why."""

    series: dict[int, int]
    refused: list[tuple[str, str]]

    @property
    def slices(self) -> int:
        return sum(self.series.values())


def _files_of(uploads: Iterable[tuple[str, bytes]], settings: Settings) -> Iterable[tuple[str, bytes]]:
    """The uploaded files, a zip's entries in place of the zip (checked as a batch's zips are)."""
    from services.batch_input import BatchInputError, check_zip, open_zip

    for name, data in uploads:
        if not name.lower().endswith(".zip"):
            yield name, data
            continue
        try:
            with open_zip(data, settings=settings) as archive:
                for info in check_zip(archive, settings=settings):
                    yield f"{name}/{info.filename}", archive.read(info)
        except BatchInputError as exc:
            raise UserError(str(exc)) from exc


def _is_dicom_name(name: str, data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def receive_files(actor: Actor | None, uploads: Iterable[tuple[str, bytes]]) -> Intake:
    """Hand-uploaded DICOM files (a multi-frame file, files of one series, or a zip of them) through the same
    intake as the listener's (worker.submit.submit_intake then queues each series). UserError for a refused zip."""
    from services.auth import require_signed_in

    actor = require_signed_in(actor, "upload a series")
    settings = get_settings()
    touched: dict[int, int] = {}
    refused: list[tuple[str, str]] = []
    for name, data in _files_of(uploads, settings):
        if not _is_dicom_name(name, data):
            refused.append((name, "not a DICOM file"))
            continue
        try:
            got = receive(data, source="upload", sender=actor.username, settings=settings)
        except InstanceRefused as exc:
            refused.append((name, str(exc)))
            continue
        touched[got.series_id] = touched.get(got.series_id, 0) + got.new_slices
    return Intake(touched, refused)


def receive_folder(actor: Actor | None, folder: str) -> Intake:
    """Every DICOM file of a server folder (under ALLOWED_DATA_ROOTS) through the intake; see receive_files."""
    from services.batch_input import BatchInputError, list_folder, resolve_folder

    settings = get_settings()
    try:
        root = resolve_folder(folder, roots=settings.allowed_data_roots)
        listing = list_folder(root)
    except BatchInputError as exc:
        raise UserError(str(exc)) from exc

    too_big: list[tuple[str, str]] = []

    def read() -> Iterable[tuple[str, bytes]]:
        for rel in listing.images:
            path = root / rel
            if (size := path.stat().st_size) > settings.max_upload_mb * 2**20:
                too_big.append((rel, f"{size / 2**20:.1f} MB, over the limit of {settings.max_upload_mb} MB"))
                continue
            yield rel, path.read_bytes()

    intake = receive_files(actor, read())
    return Intake(intake.series, [*intake.refused, *too_big, *listing.skipped])


def sweep_spool(settings: Settings | None = None, *, now: float | None = None) -> int:
    """Remove the staged files of series, and the outbox folders of sends, whose rows are gone (deleted with their
    patient), once older than ORPHAN_GRACE_S; returns how many folders. Run by the periodic sweep."""
    from db.schema import DicomSend
    from db.session import read_scope

    settings = settings or get_settings()
    now = time.time() if now is None else now
    with read_scope() as session:
        known = {
            "series": set(session.scalars(select(DicomSeries.id))),
            "outbox": set(session.scalars(select(DicomSend.id))),
        }
    removed = 0
    for kind, ids in known.items():
        base = settings.dicom_spool_dir / kind
        for folder in base.iterdir() if base.is_dir() else ():
            if not folder.name.isdigit() or int(folder.name) in ids:
                continue
            if now - folder.stat().st_mtime > settings.orphan_grace_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed
