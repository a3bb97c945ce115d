"""Query functions for batch jobs: one row per file with its outcome, and what the results page reads."""

import csv
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.reports import _cell
from db.runs import get_active_model, get_model_version
from db.schema import CLASSES, FRAMEWORKS, BatchItem, ModelVersion, Prediction, Scan
from models.metrics import classification_report

ITEM_STATES = ("done", "error", "skipped")


@dataclass(frozen=True)
class BatchRow:
    """One file of a batch, as pages show it."""

    rel_path: str
    status: str  # "done", "error" or "skipped"
    patient_mrn: str | None
    true_label: str | None
    scan_id: int | None
    needs_review: bool
    # Why a file failed or was skipped; on a done file, a note such as "saved without a patient".
    error: str | None
    # {framework: {"label", "confidence", "probabilities": {class: p}, "model_version_id"}}
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def labels(self) -> set[str]:
        """The classes the models gave this file."""
        return {r["label"] for r in self.results.values()}


def batch_models(*, session: Session, version_ids: Sequence[int] | None = None) -> list[ModelVersion]:
    """The model versions a batch uses: the given ids, or the active one of each framework.

    Raises LookupError when an id does not exist, none is active, or two ids share a framework.
    """
    if not version_ids:
        versions = [v for fw in FRAMEWORKS if (v := get_active_model(session=session, framework=fw)) is not None]
        if not versions:
            raise LookupError("No model is active yet: train one on the Train page or activate one on the Models page.")
        return versions
    versions = []
    for version_id in version_ids:
        version = get_model_version(session=session, version_id=int(version_id))
        if version is None:
            raise LookupError(f"Model version {version_id} does not exist.")
        versions.append(version)
    twice = [fw for fw, n in Counter(v.framework for v in versions).items() if n > 1]
    if twice:
        raise LookupError(f"Choose one model version per framework; {', '.join(twice)} was chosen more than once.")
    return sorted(versions, key=lambda v: FRAMEWORKS.index(v.framework) if v.framework in FRAMEWORKS else 99)


def recorded_paths(*, session: Session, job_id: int, paths: Iterable[str] | None = None) -> set[str]:
    """The files of this job that already have a row (among `paths`, when given)."""
    query = select(BatchItem.rel_path).where(BatchItem.job_id == job_id)
    if paths is not None:
        query = query.where(BatchItem.rel_path.in_(list(paths)))
    return set(session.scalars(query))


def add_batch_item(
    *,
    session: Session,
    job_id: int,
    rel_path: str,
    status: str,
    patient_mrn: str | None = None,
    true_label: str | None = None,
    scan_id: int | None = None,
    results: dict[str, dict[str, Any]] | None = None,
    needs_review: bool = False,
    error: str | None = None,
) -> BatchItem:
    if status not in ITEM_STATES:
        raise ValueError(f"not a batch item status: {status}")
    item = BatchItem(
        job_id=job_id,
        rel_path=rel_path,
        status=status,
        patient_mrn=patient_mrn,
        true_label=true_label,
        scan_id=scan_id,
        results=results,
        needs_review=needs_review,
        error=error,
    )
    session.add(item)
    return item


def batch_rows(
    *,
    session: Session,
    job_id: int,
    status: str | None = None,
    needs_review: bool | None = None,
    label: str | None = None,
) -> list[BatchRow]:
    """The job's files in path order; `label` keeps files for which any model predicted that class."""
    query = select(BatchItem).where(BatchItem.job_id == job_id).order_by(BatchItem.rel_path)
    if status is not None:
        query = query.where(BatchItem.status == status)
    if needs_review is not None:
        query = query.where(BatchItem.needs_review.is_(needs_review))
    rows = [
        BatchRow(
            rel_path=item.rel_path,
            status=item.status,
            patient_mrn=item.patient_mrn,
            true_label=item.true_label,
            scan_id=item.scan_id,
            needs_review=item.needs_review,
            error=item.error,
            results=dict(item.results or {}),
        )
        for item in session.scalars(query)
    ]
    if label is not None:
        rows = [row for row in rows if label in row.labels()]
    return rows


def batch_metrics(*, rows: Iterable[BatchRow], frameworks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model, accuracy and confusion matrix (rows: truth) over the done files whose folder names a class."""
    labelled = [r for r in rows if r.status == "done" and r.true_label in CLASSES]
    metrics = {}
    for framework in frameworks:
        scored = [r for r in labelled if framework in r.results]
        if scored:
            y_true = np.array([CLASSES.index(r.true_label) for r in scored])
            y_pred = np.array([CLASSES.index(r.results[framework]["label"]) for r in scored])
            metrics[framework] = classification_report(y_true, y_pred)
    return metrics


def batch_counts(*, session: Session, job_id: int) -> dict[str, int]:
    """How many of the job's files are done, failed and skipped, and how many done ones need review."""
    counts = dict.fromkeys(ITEM_STATES, 0)
    query = select(BatchItem.status, func.count()).where(BatchItem.job_id == job_id).group_by(BatchItem.status)
    counts.update({status: n for status, n in session.execute(query)})
    counts["needs_review"] = (
        session.scalar(select(func.count()).where(BatchItem.job_id == job_id, BatchItem.needs_review.is_(True))) or 0
    )
    return counts


def job_output_counts(*, session: Session, job_id: int) -> tuple[int, int]:
    """(scans, predictions) this job added to the record: a file already there is not counted again."""
    scans = session.scalar(select(func.count()).select_from(Scan).where(Scan.job_id == job_id)) or 0
    predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id)) or 0
    return scans, predictions


CSV_FIXED = ("file", "status", "patient_id", "true_label")


def batch_csv(*, rows: Iterable[BatchRow], frameworks: Sequence[str]) -> bytes:
    """The rows as CSV: per model its class, confidence and each probability; then review flag and error."""
    out = io.StringIO()
    writer = csv.writer(out)
    per_model = [
        f"{fw}_{column}" for fw in frameworks for column in ("class", "confidence", *(f"p_{c}" for c in CLASSES))
    ]
    writer.writerow([*CSV_FIXED, *per_model, "needs_review", "error"])
    for row in rows:
        values: list[object] = [row.rel_path, row.status, row.patient_mrn or "", row.true_label or ""]
        for fw in frameworks:
            result = row.results.get(fw)
            if result is None:
                values += [""] * (2 + len(CLASSES))
                continue
            values += [result["label"], f"{result['confidence']:.4f}"]
            values += [f"{result['probabilities'][c]:.4f}" for c in CLASSES]
        values += [row.needs_review if row.status == "done" else "", row.error or ""]
        writer.writerow(_cell(v) for v in values)
    return out.getvalue().encode("utf-8")
