"""Patient records as people act on them: exports, deletes and merges, each audited.

Deleting and merging are for admins only, checked here; both name each patient by id and patient id together,
so a page holding a stale id never acts on someone else. (Reads of scans: services.reads.)
"""

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from db.audit import describe
from db.batches import BatchRow
from db.deletion import Removal, delete_patient, delete_scan
from db.history import PredictionFilters, all_predictions
from db.patients import Moved, RecordError, merge_patients
from db.schema import Patient, Scan
from db.session import read_scope, session_scope
from domain import AuditAction, UserError
from services.auth import Actor, audit, require_admin, require_signed_in
from services.reports import batch_csv, predictions_csv


def remove_scan(actor: Actor | None, *, scan_id: int) -> Removal:
    require_admin(actor, "delete scans")
    with session_scope() as session:
        scan = session.get(Scan, scan_id)
        mrn = scan.patient.mrn if scan is not None and scan.patient is not None else None
        removal = delete_scan(session=session, scan_id=scan_id)
        audit(
            actor,
            AuditAction.SCAN_DELETED,
            target=f"scan {scan_id}",
            patient_mrn=mrn,
            detail=_removed(removal),
            session=session,
        )
    return removal


def _removed(removal: Removal) -> str:
    return f"{removal.scans} scan(s), {removal.predictions} prediction(s), {removal.reads} read(s)"


def _patient(session: Session, patient_pk: int, mrn: str, what: str) -> Patient:
    patient = session.get(Patient, patient_pk)
    if patient is None or patient.mrn != mrn:
        raise UserError(f"Patient {patient_pk} is no longer {mrn}: nothing was {what}. Open the record again.")
    return patient


def remove_patient(actor: Actor | None, *, patient_pk: int, mrn: str) -> Removal:
    """Delete the patient with this id *and* this patient id; UserError when the two no longer go together."""
    require_admin(actor, "delete patients")
    with session_scope() as session:
        patient = session.get(Patient, patient_pk)
        if patient is not None and patient.mrn != mrn:
            raise UserError(f"Patient {patient_pk} is no longer {mrn}: nothing was deleted. Open the record again.")
        removal = delete_patient(session=session, patient_pk=patient_pk)
        audit(
            actor,
            AuditAction.PATIENT_DELETED,
            target=f"patient {patient_pk}",
            patient_mrn=mrn,
            detail=_removed(removal),
            session=session,
        )
    return removal


def merge(actor: Actor | None, *, keep: tuple[int, str], twin: tuple[int, str]) -> Moved:
    """Merge the patient `twin` (id, patient id) into `keep`: their scans, predictions and reads move, the twin is
    deleted. Admins only; audited with the counts. UserError when either pair no longer goes together."""
    require_admin(actor, "merge patients")
    try:
        with session_scope() as session:
            kept = _patient(session, *keep, "merged")
            gone = _patient(session, *twin, "merged")
            moved = merge_patients(session=session, keep=kept, merge=gone)
            audit(
                actor,
                AuditAction.PATIENT_MERGED,
                target=f"patient {kept.id}",
                patient_mrn=kept.mrn,
                detail=(
                    f"patient {twin[1]} (id {twin[0]}) merged into {kept.mrn} (id {kept.id}): {moved.scans} scan(s) "
                    f"moved, {moved.joined} of them joined to a scan of the same image, {moved.predictions} "
                    f"prediction(s), {moved.reads} read(s), {moved.batch_rows} batch result row(s)"
                ),
                session=session,
            )
    except RecordError as exc:
        raise UserError(str(exc)) from exc
    return moved


def export_predictions(actor: Actor | None, *, filters: PredictionFilters) -> bytes:
    """Every prediction the filters match, as CSV; the export is audited with its filters and size."""
    actor = require_signed_in(actor, "export predictions")
    with read_scope() as session:
        rows = all_predictions(session=session, filters=filters)
    _audit_export(actor, "predictions CSV", [r.patient_mrn for r in rows], f"{len(rows)} prediction(s)", filters)
    return predictions_csv(rows=rows)


def export_report(actor: Actor | None, *, patient_pk: int, mrn: str, write: Callable[[], str | None]) -> str | None:
    """The patient's report as `write` produces it; audited as an export of that patient's record."""
    actor = require_signed_in(actor, "export reports")
    html = write()
    if html is not None:
        audit(actor, AuditAction.EXPORT, target=f"patient {patient_pk} report", patient_mrn=mrn, detail="HTML report")
    return html


def viewed(actor: Actor | None, action: str, *, target: str, patient_mrn: str | None) -> None:
    """Record that a patient's record or one of their scans was shown to the actor."""
    actor = require_signed_in(actor, "view patient records")
    audit(actor, action, target=target, patient_mrn=patient_mrn)


def export_batch(
    actor: Actor | None, *, job_id: int, rows: Sequence[BatchRow], frameworks: Sequence[str], threshold: float
) -> bytes:
    """A batch job's result rows as CSV; audited as an export of that job's results."""
    actor = require_signed_in(actor, "export batch results")
    _audit_export(actor, f"job {job_id} results CSV", [r.patient_mrn for r in rows], f"{len(rows)} row(s)")
    return batch_csv(rows=rows, frameworks=frameworks, threshold=threshold)


def _audit_export(
    actor: Actor, target: str, mrns: Sequence[str | None], size: str, filters: object | None = None
) -> None:
    """An export in the audit log: its size, how many patients it names, and the patient when there is one."""
    patients = {mrn for mrn in mrns if mrn}
    detail = f"{size} of {len(patients)} patient(s)" + (
        f"; filters: {describe(filters)}" if filters is not None else ""
    )
    only = next(iter(patients)) if len(patients) == 1 else None
    audit(actor, AuditAction.EXPORT, target=target, patient_mrn=only, detail=detail)
