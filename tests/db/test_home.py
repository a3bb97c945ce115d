"""A person's recent patients, from the audit log: their own work only, newest first, deleted patients left out."""

from db.audit import record
from db.home import recent_patients
from db.scans import get_or_create_patient, get_or_create_scan
from db.session import session_scope
from domain import AuditAction
from tests.users import make_actor


def test_recent_patients_are_the_users_own_newest_first(any_db_url: str) -> None:
    me, other = make_actor("clinician"), make_actor("clinician", "other")
    with session_scope() as session:
        for mrn in ("P-1", "P-2", "P-3", "P-4"):
            patient = get_or_create_patient(session=session, mrn=mrn)
            for n in range(2 if mrn == "P-1" else 0):
                get_or_create_scan(
                    session=session,
                    patient_pk=patient.id,
                    sha256=f"{mrn}{n}".ljust(64, "0"),
                    file_path="/x.png",
                    original_name="x.png",
                    source="upload",
                    width=8,
                    height=8,
                    image_format="PNG",
                )
        # In this order, each a moment after the last (the log takes no other times: it refuses updates).
        work = [
            (me, AuditAction.UPLOAD, "P-1"),
            (me, AuditAction.PATIENT_VIEWED, "P-2"),
            (me, AuditAction.PATIENT_VIEWED, "P-1"),  # the latest work: P-1 comes first
            (me, AuditAction.REFUSED, "P-3"),  # not work on the record
            (other, AuditAction.REVIEW, "P-4"),  # another person's
            (me, AuditAction.UPLOAD, "GONE"),  # a patient no longer in the record
        ]
        for actor, action, mrn in work:
            record(session=session, action=action, who=actor.who, patient_mrn=mrn)
    with session_scope() as session:
        rows = recent_patients(session=session, user_id=me.user_id)
    assert [(r.mrn, r.scans) for r in rows] == [("P-1", 2), ("P-2", 0)]
    assert rows[0].last_worked_at >= rows[1].last_worked_at and rows[0].last_scan_at is not None
