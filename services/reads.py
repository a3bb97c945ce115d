"""Reading scans: a clinician's read saved under their name, a patient given to a scan that has none, the queue.

Both writes are audited in the transaction that makes them. Who is acting comes from the page's Actor and is
checked here (services.auth), at the moment of acting.
"""

from dataclasses import dataclass

from db.history import ScanEntry, scan_entry
from db.patients import RecordError, assign_patient
from db.reads import ReadError, ReadRow, add_read
from db.session import read_scope, session_scope
from db.worklist import QueueCounts, QueueEntry, QueueFilters, queue_counts, review_queue
from domain import AuditAction, ReadLabel, UserError, framework_label
from services.auth import Actor, audit, require_signed_in

__all__ = ["ReadError", "RecordError"]


@dataclass(frozen=True)
class Assigned:
    scan_id: int  # the scan that holds the image now: another when the patient already had the same image
    mrn: str  # the patient's id as the record has it (an existing patient's, when the typed id matched one)
    joined: bool


def models_said(entry: ScanEntry) -> str:
    """What each model answered for the scan, in words: "Custom CNN (PyTorch) glioma 91%, ..."."""
    if not entry.predictions:
        return "no model answer" + (" (the brain-MRI check refused the image)" if entry.refusal else "")
    return ", ".join(f"{framework_label(p.framework)} {p.label} {p.confidence:.0%}" for p in entry.predictions)


def describe_read(label: str, entry: ScanEntry) -> str:
    """The read as the audit log keeps it: the class, and how it stands to the models' answers."""
    answers = {p.label for p in entry.predictions}
    if answers == {label}:
        stance = "confirming the models' answer"
    elif label == ReadLabel.NOT_ASSESSABLE:
        stance = "not assessable"
    else:
        stance = "a class of the reader's choice"
    return f"read as {ReadLabel(label).label}, {stance}; models: {models_said(entry)}"


def read_scan(actor: Actor | None, *, scan_id: int, label: str | None, note: str | None) -> ReadRow:
    """Save the signed-in user's read of a scan (ReadError with a message when it cannot be saved)."""
    actor = require_signed_in(actor, "read scans")
    with session_scope() as session:
        row = add_read(
            session=session, scan_id=scan_id, label=label, note=note, read_by=actor.username, user_id=actor.user_id
        )
        entry = scan_entry(session=session, scan_id=scan_id)
        assert entry is not None  # add_read found it in this very transaction
        audit(
            actor,
            AuditAction.REVIEW,
            target=f"scan {scan_id}",
            patient_mrn=entry.patient_mrn,
            detail=describe_read(row.label, entry) + (f"; note: {row.note}" if row.note else ""),
            session=session,
        )
    return row


def give_patient(actor: Actor | None, *, scan_id: int, mrn: str) -> Assigned:
    """Give a scan without a patient the patient `mrn` names (matched, or created when new); UserError otherwise."""
    actor = require_signed_in(actor, "assign patients to scans")
    try:
        with session_scope() as session:
            kept, patient, moved = assign_patient(session=session, scan_id=scan_id, mrn=mrn)
            joined = f"; joined to scan {kept}, which held the same image" if moved.joined else ""
            audit(
                actor,
                AuditAction.SCAN_ASSIGNED,
                target=f"scan {scan_id}",
                patient_mrn=patient.mrn,
                detail=f"patient {patient.mrn} assigned to a scan without one{joined}",
                session=session,
            )
            return Assigned(scan_id=kept, mrn=patient.mrn, joined=bool(moved.joined))
    except (RecordError, ValueError) as exc:
        raise UserError(str(exc)) from exc


def queue(*, filters: QueueFilters) -> list[QueueEntry]:
    """The scans awaiting a read under `filters`, in the order they are worked through."""
    with read_scope() as session:
        return review_queue(session=session, filters=filters)


def counts(*, filters: QueueFilters) -> QueueCounts:
    with read_scope() as session:
        return queue_counts(session=session, filters=filters)


def awaiting_reads(*, user_id: int | None = None) -> tuple[QueueCounts, QueueCounts | None]:
    """For a Home page: the scans awaiting a read, and (given a user) those of the batch jobs they started."""
    everyone = counts(filters=QueueFilters())
    theirs = counts(filters=QueueFilters(submitted_by=user_id)) if user_id is not None else None
    return everyone, theirs


def case(*, scan_id: int) -> ScanEntry | None:
    """A scan of the queue with its images' record: predictions, reads, patient."""
    with read_scope() as session:
        return scan_entry(session=session, scan_id=scan_id)
