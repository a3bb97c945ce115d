"""A clinician's review of a prediction, and the reviewed scans as a labelled set for training."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.history import PredictionRow, final_label, get_prediction
from db.schema import CLASSES, Prediction, Scan, utcnow

REVIEW_ACTIONS = ("confirm", "correct")
MAX_REVIEWER_CHARS = 128
MAX_NOTE_CHARS = 2000


class ReviewError(ValueError):
    """A review that cannot be recorded; the message is shown to the reviewer as-is."""


def review_prediction(
    *,
    session: Session,
    prediction_id: int,
    action: str,
    label: str | None = None,
    reviewer: str,
    note: str | None = None,
) -> PredictionRow:
    """Record that `reviewer` confirmed the predicted label or corrected it to `label`, with when."""
    reviewer = (reviewer or "").strip()
    note = (note or "").strip() or None
    if not reviewer:
        raise ReviewError("Enter the reviewer's name.")
    if len(reviewer) > MAX_REVIEWER_CHARS:
        raise ReviewError(f"The reviewer's name is longer than {MAX_REVIEWER_CHARS} characters.")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"The note is longer than {MAX_NOTE_CHARS} characters.")
    if action not in REVIEW_ACTIONS:
        raise ReviewError(f"Unknown review action {action!r}; choose confirm or correct.")
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise ReviewError("This prediction no longer exists; it may have been deleted.")
    if action == "confirm":
        if label is not None and label != prediction.label:
            raise ReviewError("To give a different label, choose Correct rather than Confirm.")
        prediction.review_status, prediction.reviewer_label = "confirmed", prediction.label
    else:
        if label not in CLASSES:
            raise ReviewError(f"Choose the correct label: one of {', '.join(CLASSES)}.")
        if label == prediction.label:
            raise ReviewError(f"The model already predicted {label}; choose Confirm instead.")
        prediction.review_status, prediction.reviewer_label = "corrected", label
    prediction.reviewer, prediction.review_note, prediction.reviewed_at = reviewer, note, utcnow()
    session.flush()
    row = get_prediction(session=session, prediction_id=prediction_id)
    assert row is not None  # flushed in this very transaction
    return row


def reviewed_training_items(*, session: Session) -> list[tuple[str, str]]:
    """(file path, label) of every reviewed scan image: the reviewer's label if corrected, else the predicted one.

    One item per stored image: when the same image was reviewed more than once (several models, several
    patients), the latest review decides its label.
    """
    rows = session.execute(
        select(Scan.sha256, Scan.file_path, Prediction.review_status, Prediction.label, Prediction.reviewer_label)
        .join(Scan, Prediction.scan_id == Scan.id)
        .where(Prediction.review_status.in_(("confirmed", "corrected")))
        .order_by(Prediction.reviewed_at, Prediction.id)
    ).all()
    items: dict[str, tuple[str, str]] = {}
    for sha256, file_path, status, label, reviewer_label in rows:
        items[sha256] = (file_path, final_label(label=label, review_status=status, reviewer_label=reviewer_label))
    return sorted(items.values())
