"""Query functions for batch jobs: one row per file with its outcome, and what the results page reads."""

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.reads import ReadRow, current_read_of
from db.runs import get_active_model, get_model_version
from db.schema import FRAMEWORKS, BatchItem, BatchTombstone, ModelVersion, Prediction, Scan

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
    file_path: str | None = None  # the stored scan's file, while the scan exists
    # The scan's current read, empty until a clinician read it.
    read_label: str | None = None
    read_by: str | None = None
    read_at: datetime | None = None

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


def path_digest(rel_path: str) -> str:
    return hashlib.sha256(rel_path.encode("utf-8", "surrogateescape")).hexdigest()


def deleted_paths(*, session: Session, job_id: int, paths: Iterable[str]) -> set[str]:
    """The files among `paths` whose scans were deleted after this job predicted them (see BatchTombstone)."""
    digests = set(session.scalars(select(BatchTombstone.path_sha256).where(BatchTombstone.job_id == job_id)))
    return {p for p in paths if path_digest(p) in digests} if digests else set()


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
    """The job's files in path order, each with its scan's current read; `label` keeps files for which any model
    predicted that class."""
    query = (
        select(BatchItem, Scan.file_path)
        .outerjoin(Scan, Scan.id == BatchItem.scan_id)
        .where(BatchItem.job_id == job_id)
        .order_by(BatchItem.rel_path)
    )
    if status is not None:
        query = query.where(BatchItem.status == status)
    if needs_review is not None:
        query = query.where(BatchItem.needs_review.is_(needs_review))
    found = session.execute(query).all()
    reads = current_read_of(session=session, scan_ids=(item.scan_id for item, _ in found if item.scan_id))
    rows = [_row(item, file_path, reads.get(item.scan_id)) for item, file_path in found]
    if label is not None:
        rows = [row for row in rows if label in row.labels()]
    return rows


def _row(item: BatchItem, file_path: str | None, read: ReadRow | None) -> BatchRow:
    return BatchRow(
        rel_path=item.rel_path,
        status=item.status,
        patient_mrn=item.patient_mrn,
        true_label=item.true_label,
        scan_id=item.scan_id,
        needs_review=item.needs_review,
        error=item.error,
        results=dict(item.results or {}),
        file_path=file_path,
        read_label=read.label if read else None,
        read_by=read.read_by if read else None,
        read_at=read.read_at if read else None,
    )


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
