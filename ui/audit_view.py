"""The audit log as people read it: each entry a sentence, each action a name, times in the clinic's zone."""

import pandas as pd

from db.audit import AuditRow
from db.secrets import is_hidden
from domain import AuditAction, SessionEnd
from services.clock import format_time, zone_name

A = AuditAction
ACTION_NAMES = {
    A.SIGN_IN: "sign-in",
    A.SIGN_IN_FAILED: "failed sign-in",
    A.SIGN_IN_THROTTLED: "sign-in refused (too many failures)",
    A.SIGN_OUT: "sign-out",
    A.SESSION_EXPIRED: "session expired",
    A.UPLOAD: "scan saved to a record",
    A.PREDICTION: "image predicted",
    A.PATIENT_VIEWED: "patient record opened",
    A.SCAN_VIEWED: "scan viewed",
    A.REVIEW: "scan read",
    A.EXPORT: "export",
    A.SCAN_DELETED: "scan deleted",
    A.PATIENT_DELETED: "patient deleted",
    A.BATCH_STARTED: "batch job started",
    A.TRAINING_STARTED: "training started",
    A.JOB_CANCELLED: "job cancelled",
    A.JOB_REQUEUED: "job run again",
    A.MODEL_PROMOTED: "model made active",
    A.MODEL_ROLLED_BACK: "model rolled back",
    A.MODEL_DOWNLOADED: "model file downloaded",
    A.USER_CREATED: "user added",
    A.USER_DISABLED: "user disabled",
    A.USER_ENABLED: "user enabled",
    A.PASSWORD_RESET: "password reset",
    A.ROLE_CHANGED: "role changed",
    A.USER_UNLOCKED: "user unlocked",
    A.LIST_VIEWED: "list of records viewed",
    A.REFUSED: "refused",
    A.DICOM_REFUSED: "DICOM refused",
    A.SERIES_RECEIVED: "series received",
    A.SERIES_QUEUED: "series sent to prediction",
    A.SERIES_VIEWED: "series viewed",
    A.PACS_SEARCHED: "PACS searched",
    A.RESULTS_SENT: "results sent to the PACS",
    A.PATIENT_MERGED: "patients merged",
    A.SCAN_ASSIGNED: "scan given a patient",
}
# What each action says after the person's name; {target}, {patient} and {detail} are filled in where known.
SENTENCES = {
    A.SIGN_IN: "signed in",
    A.SIGN_IN_FAILED: "failed to sign in (wrong password, or the account is disabled)",
    A.SIGN_IN_THROTTLED: "was refused a sign-in without a password check: too many failures",
    A.SIGN_OUT: "signed out",
    A.SESSION_EXPIRED: "was signed out: the session expired",
    A.UPLOAD: "saved {target} to {patient}'s record",
    A.PREDICTION: "had an image predicted",
    A.PATIENT_VIEWED: "opened {patient}'s record",
    A.SCAN_VIEWED: "viewed {target} of {patient}",
    A.REVIEW: "read {target} of {patient}",
    A.EXPORT: "exported {target}",
    A.SCAN_DELETED: "deleted {target} of {patient}",
    A.PATIENT_DELETED: "deleted {patient} ({target})",
    A.BATCH_STARTED: "started batch {target}",
    A.TRAINING_STARTED: "started training {target}",
    A.JOB_CANCELLED: "cancelled {target}",
    A.JOB_REQUEUED: "ran {target} again",
    A.MODEL_PROMOTED: "made {target} the active model",
    A.MODEL_ROLLED_BACK: "rolled back to {target}",
    A.MODEL_DOWNLOADED: "downloaded the file of {target}",
    A.USER_CREATED: "added {target}",
    A.USER_DISABLED: "disabled {target}",
    A.USER_ENABLED: "enabled {target}",
    A.PASSWORD_RESET: "reset the password of {target}",
    A.ROLE_CHANGED: "changed the role of {target}",
    A.USER_UNLOCKED: "unlocked the sign-ins of {target}",
    A.LIST_VIEWED: "viewed a list: {target}",
    A.REFUSED: "was refused",
    A.DICOM_REFUSED: "refused a DICOM association or instance",
    A.SERIES_RECEIVED: "received {target} and sent it to prediction",
    A.SERIES_QUEUED: "sent a series to prediction as {target}",
    A.SERIES_VIEWED: "viewed {target} of {patient}",
    A.PACS_SEARCHED: "searched the PACS",
    A.RESULTS_SENT: "sent the results of {target} to the PACS",
    A.PATIENT_MERGED: "merged a twin into {patient}",
    A.SCAN_ASSIGNED: "gave {target} to {patient}",
}
# Entries no person made: what the system itself did.
SYSTEM = {
    A.USER_CREATED: "The server's command line",
    A.USER_UNLOCKED: "The server's command line",
    A.DICOM_REFUSED: "The DICOM listener",
    A.SERIES_RECEIVED: "The DICOM listener",
    A.RESULTS_SENT: "The worker",
}
ENDS = {
    SessionEnd.IDLE: "was signed out after the idle limit without activity",
    SessionEnd.EXPIRED: "was signed out at the end of the longest session allowed",
}


def who(row: AuditRow) -> str:
    if row.username is None:
        return SYSTEM.get(AuditAction(row.action), "Someone not signed in")
    if is_hidden(row.username):
        return f"A user name nobody has ({row.username})"
    return row.username


def sentence(row: AuditRow) -> str:
    """One entry as a sentence: who did what, to which record, with the entry's detail."""
    action = AuditAction(row.action)
    text = ENDS.get(row.detail, "") if action == A.SESSION_EXPIRED else ""
    text = text or SENTENCES[action].format(
        target=row.target or "a record", patient=f"patient {row.patient_mrn}" if row.patient_mrn else "a patient"
    )
    detail = "" if action == A.SESSION_EXPIRED or not row.detail else f": {row.detail}"
    return f"{who(row)} {text}{detail}."


def entries_frame(rows: list[AuditRow]) -> pd.DataFrame:
    """The entries as the Audit log page's table shows them."""
    when = f"When ({zone_name()})"
    columns = [when, "What happened", "Action", "Record", "Patient", "From address", "Browser session", "Entry"]
    return pd.DataFrame(
        [
            {
                when: format_time(r.at, seconds=True),
                "What happened": sentence(r),
                "Action": ACTION_NAMES[AuditAction(r.action)],
                "Record": r.target or "",
                "Patient": r.patient_mrn or "",
                "From address": r.client or "",
                "Browser session": r.session_id or "",
                "Entry": r.id,
            }
            for r in rows
        ],
        columns=columns,
    )
