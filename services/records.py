"""Patient records as people act on them: reviews under the signed-in user, exports and deletes, each audited.

Deleting is for admins only, checked here; a delete names the patient by id and patient id together, so a
page holding a stale id never deletes someone else.
"""

from collections.abc import Callable, Sequence

from db.audit import describe
from db.batches import BatchRow
from db.deletion import Removal, delete_patient, delete_scan
from db.history import PredictionFilters, PredictionRow, all_predictions
from db.reviews import review_prediction
from db.schema import Patient, Scan
from db.session import read_scope, session_scope
from domain import AuditAction, UserError
from services.auth import Actor, audit, require_admin, require_signed_in
from services.reports import batch_csv, predictions_csv


def review(
    actor: Actor | None, *, prediction_id: int, action: str, label: str | None, note: str | None
) -> PredictionRow:
    """Confirm or correct a prediction as the signed-in user (ReviewError with a message when it can't be)."""
    actor = require_signed_in(actor, "review predictions")
    with session_scope() as session:
        row = review_prediction(
            session=session,
            prediction_id=prediction_id,
            action=action,
            label=label,
            reviewer=actor.username,
            note=note,
        )
        audit(
            actor,
            AuditAction.REVIEW,
            target=f"prediction {prediction_id}",
            patient_mrn=row.patient_mrn,
            detail=f"{row.review_status} as {row.final_label}",
            session=session,
        )
    return row


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
            detail=f"{removal.scans} scan(s), {removal.predictions} prediction(s)",
            session=session,
        )
    return removal


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
            detail=f"{removal.scans} scan(s), {removal.predictions} prediction(s)",
            session=session,
        )
    return removal


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


def export_batch(actor: Actor | None, *, job_id: int, rows: Sequence[BatchRow], frameworks: Sequence[str]) -> bytes:
    """A batch job's result rows as CSV; audited as an export of that job's results."""
    actor = require_signed_in(actor, "export batch results")
    _audit_export(actor, f"job {job_id} results CSV", [r.patient_mrn for r in rows], f"{len(rows)} row(s)")
    return batch_csv(rows=rows, frameworks=frameworks)


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
