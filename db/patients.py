"""Joining records: a scan without a patient given one, and a patient's twin merged into them.

When the patient already holds the same image, the two scans become one: the scan kept gathers the other's
reads, the predictions of models it lacks and its batch result rows; nothing a clinician wrote is lost.
"""

from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.scans import find_scan, get_or_create_patient
from db.schema import BatchItem, Patient, Prediction, Read, Scan, mrn_key


class RecordError(ValueError):
    """A join that cannot be made; the message is shown to the person as-is."""


@dataclass(frozen=True)
class Moved:
    """What moving scans to a patient changed."""

    scans: int = 0  # scans now the patient's
    joined: int = 0  # of them, scans of an image the patient already had, joined into that scan
    predictions: int = 0
    reads: int = 0
    batch_rows: int = 0

    def __add__(self, other: "Moved") -> "Moved":
        return Moved(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.scans, self.joined, self.predictions, self.reads, self.batch_rows)


def _count(session: Session, model: type[Prediction] | type[Read], scan_id: int) -> int:
    return session.scalar(select(func.count(model.id)).where(model.scan_id == scan_id)) or 0


def move_scan(*, session: Session, scan: Scan, patient: Patient) -> tuple[int, Moved]:
    """Make `scan` the patient's; (the id of the scan that holds it now, what moved)."""
    predictions, reads = _count(session, Prediction, scan.id), _count(session, Read, scan.id)
    rows = update(BatchItem).where(BatchItem.scan_id == scan.id)
    twin = find_scan(session=session, patient_pk=patient.id, sha256=scan.sha256)
    if twin is None:
        scan.patient_pk = patient.id
        batch_rows = session.execute(rows.values(patient_mrn=patient.mrn)).rowcount
        session.flush()
        return scan.id, Moved(scans=1, predictions=predictions, reads=reads, batch_rows=batch_rows)
    # Same image, same model: the same answer, so the twin's prediction stands for both.
    held = select(Prediction.model_version_id).where(Prediction.scan_id == twin.id)
    predictions = session.execute(
        update(Prediction)
        .where(Prediction.scan_id == scan.id, Prediction.model_version_id.not_in(held))
        .values(scan_id=twin.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.execute(update(Read).where(Read.scan_id == scan.id).values(scan_id=twin.id))
    batch_rows = session.execute(rows.values(scan_id=twin.id, patient_mrn=patient.mrn)).rowcount
    # The stored file is named by its content, so the twin holds the very same file: nothing to remove.
    session.expire(scan, ["predictions"])
    session.delete(scan)
    session.flush()
    return twin.id, Moved(scans=1, joined=1, predictions=predictions, reads=reads, batch_rows=batch_rows)


def assign_patient(*, session: Session, scan_id: int, mrn: str) -> tuple[int, Patient, Moved]:
    """Give a scan without a patient the patient `mrn` names (created when new); (scan id now, patient, moved).

    Raises RecordError for a missing scan or one that has a patient, ValueError for an id against the rule.
    """
    scan = session.get(Scan, scan_id)
    if scan is None:
        raise RecordError("This scan no longer exists; it may have been deleted.")
    if scan.patient_pk is not None:
        owner = session.get(Patient, scan.patient_pk)
        raise RecordError(f"Scan #{scan_id} already belongs to patient {owner.mrn if owner else scan.patient_pk}.")
    patient = get_or_create_patient(session=session, mrn=mrn)
    kept, moved = move_scan(session=session, scan=scan, patient=patient)
    return kept, patient, moved


def merge_patients(*, session: Session, keep: Patient, merge: Patient) -> Moved:
    """Move every scan of `merge` to `keep` and delete `merge`; `keep` takes the matching key if it had none."""
    if keep.id == merge.id:
        raise RecordError("Choose two different patients to merge.")
    moved = Moved()
    for scan in session.scalars(select(Scan).where(Scan.patient_pk == merge.id).order_by(Scan.id)).all():
        moved += move_scan(session=session, scan=scan, patient=keep)[1]
    # Rows of this job that were never saved as scans (unreadable files) name the patient too.
    session.execute(
        update(BatchItem)
        .where(BatchItem.patient_mrn == merge.mrn, BatchItem.scan_id.is_(None))
        .values(patient_mrn=keep.mrn)
    )
    session.delete(merge)
    session.flush()
    if keep.mrn_key is None and get_patient_by_key(session=session, key=mrn_key(keep.mrn)) is None:
        keep.mrn_key = mrn_key(keep.mrn)
        session.flush()
    return moved


def get_patient_by_key(*, session: Session, key: str) -> Patient | None:
    return session.scalar(select(Patient).where(Patient.mrn_key == key))


def twins(*, session: Session, patient: Patient) -> list[Patient]:
    """Other patients whose id matches this one's once case and surrounding whitespace are ignored."""
    key = mrn_key(patient.mrn)
    # Every patient made since ids were matched this way has its key; only twins that existed before lack one.
    candidates = session.scalars(
        select(Patient)
        .where(Patient.id != patient.id, or_(Patient.mrn_key.is_(None), Patient.mrn_key == key))
        .order_by(Patient.id)
    ).all()
    return [other for other in candidates if mrn_key(other.mrn) == key]
