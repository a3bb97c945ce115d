"""Counts for the overview on the home page."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.schema import Base, Patient, Prediction, Scan, TrainingRun

_COUNTED: dict[str, type[Base]] = {
    "patients": Patient,
    "scans": Scan,
    "predictions": Prediction,
    "runs": TrainingRun,
}


def table_counts(*, session: Session) -> dict[str, int]:
    """How many patients, scans, predictions and training runs are stored."""
    return {name: session.scalar(select(func.count()).select_from(table)) or 0 for name, table in _COUNTED.items()}
