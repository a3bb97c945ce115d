"""Deleting a scan or a whole patient: the rows, and the stored files that no remaining scan uses."""

from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from db.batches import path_digest
from db.schema import BatchItem, BatchTombstone, Patient, Prediction, Read, Scan
from db.storage import delete_scan_file_if_unused


@dataclass(frozen=True)
class Removal:
    """What a deletion removed; `files` are unlinked once the transaction commits."""

    scans: int
    predictions: int
    files: tuple[str, ...]
    reads: int = 0


def delete_scan(*, session: Session, scan_id: int) -> Removal:
    """Delete one scan, its predictions and reads, and its stored file unless another scan uses it."""
    return _delete_scans(session=session, which=Scan.id == scan_id)


def delete_patient(*, session: Session, patient_pk: int) -> Removal:
    """Delete a patient with all their scans, predictions and reads, and the stored files no other scan uses."""
    mrn = session.scalar(select(Patient.mrn).where(Patient.id == patient_pk))
    if mrn is None:
        # Already deleted (a second click, another tab): nothing to do. Going on would match every batch row
        # without a patient, since a comparison with no MRN reads as IS NULL.
        return Removal(scans=0, predictions=0, files=())
    # Batch results name the patient too: they go with the patient, not just lose their scan.
    _bury(session, BatchItem.patient_mrn == mrn)
    removal = _delete_scans(session=session, which=Scan.patient_pk == patient_pk)
    session.execute(delete(Patient).where(Patient.id == patient_pk))
    return removal


def _bury(session: Session, which: ColumnElement[bool]) -> None:
    """Delete these batch result rows, leaving a tombstone of each file so a re-run of its job skips it."""
    items = session.execute(select(BatchItem.job_id, BatchItem.rel_path).where(which)).all()
    buried = {(job_id, path_digest(rel_path)) for job_id, rel_path in items}
    known = {
        (t.job_id, t.path_sha256)
        for t in session.scalars(select(BatchTombstone).where(BatchTombstone.job_id.in_({j for j, _ in buried})))
    }
    session.add_all(BatchTombstone(job_id=j, path_sha256=d) for j, d in buried - known)
    session.execute(delete(BatchItem).where(which).execution_options(synchronize_session=False))


def _delete_scans(*, session: Session, which: ColumnElement[bool]) -> Removal:
    files = session.execute(select(Scan.sha256, Scan.file_path).where(which).distinct()).all()
    scan_ids = select(Scan.id).where(which).scalar_subquery()
    # A batch job's result row for a deleted scan would keep its prediction: removed with it.
    _bury(session, BatchItem.scan_id.in_(scan_ids))
    predictions = session.execute(
        delete(Prediction).where(Prediction.scan_id.in_(scan_ids)).execution_options(synchronize_session="fetch")
    ).rowcount
    reads = session.execute(
        delete(Read).where(Read.scan_id.in_(scan_ids)).execution_options(synchronize_session=False)
    ).rowcount
    scans = session.execute(delete(Scan).where(which).execution_options(synchronize_session="fetch")).rowcount
    # Files are addressed by content, so another patient's scan of the same image keeps its file.
    removed = tuple(
        path for sha256, path in files if delete_scan_file_if_unused(session=session, sha256=sha256, path=path)
    )
    return Removal(scans=scans, predictions=predictions, files=removed, reads=reads)
