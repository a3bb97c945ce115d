"""Query functions for browsing the history: the patient list, filtered predictions and a patient's timeline.

A scan's final word is a clinician's read (db.reads); the models' predictions are shown beside it as evidence.
Every function returns plain dataclasses (never ORM objects), so a page may cache the results.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from db.reads import ReadRow, current_read_of, scan_reads
from db.schema import CLASSES, ModelVersion, Patient, Prediction, Read, Scan, mrn_key

SOURCES = ("upload", "batch")
MAX_PAGE_SIZE = 500
NEWEST_FIRST = (Prediction.created_at.desc(), Prediction.id.desc())

T = TypeVar("T")


@dataclass(frozen=True)
class PagedRows(Generic[T]):
    """One page of rows and the number of rows across all pages."""

    rows: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class PatientSummary:
    patient_pk: int
    mrn: str
    n_scans: int
    last_scan_at: datetime | None
    # The latest scan's read when it was read, else the models' answers ("a / b" when they differ).
    last_result: str | None
    last_result_read: bool
    awaiting_read: int  # scans without a read


@dataclass(frozen=True)
class PredictionFilters:
    """What the history is filtered on; empty fields do not filter."""

    labels: tuple[str, ...] = ()
    needs_review: bool | None = None
    read: bool | None = None  # whether the prediction's scan has a read
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    model_version_ids: tuple[int, ...] = ()
    source: str | None = None
    patient: str | None = None  # part of a patient id
    patient_pk: int | None = None

    def __post_init__(self) -> None:
        unknown = [label for label in self.labels if label not in CLASSES]
        if unknown:
            raise ValueError(f"Unknown class {unknown[0]!r}; choose from {', '.join(CLASSES)}.")
        if self.source is not None and self.source not in SOURCES:
            raise ValueError(f"Unknown source {self.source!r}; choose from {', '.join(SOURCES)}.")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("The start date is after the end date.")


@dataclass(frozen=True)
class PredictionRow:
    prediction_id: int
    created_at: datetime
    patient_pk: int | None
    patient_mrn: str | None
    scan_id: int
    original_name: str
    file_path: str
    source: str
    job_id: int | None
    model_version_id: int
    model_name: str
    framework: str
    artifact_path: str
    model_sha256: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    needs_review: bool
    # The scan's current read (empty until a clinician read it): what a clinician said, beside what the model said.
    read_label: str | None
    read_by: str | None
    read_at: datetime | None
    read_note: str | None

    @property
    def read(self) -> bool:
        return self.read_label is not None


@dataclass(frozen=True)
class ScanEntry:
    scan_id: int
    created_at: datetime
    study_date: str | None
    original_name: str
    file_path: str
    sha256: str
    source: str
    job_id: int | None
    width: int
    height: int
    image_format: str
    modality: str | None
    series_description: str | None
    note: str | None
    file_shared: bool  # another patient's scan uses the same stored image
    predictions: list[PredictionRow] = field(default_factory=list)
    reads: list[ReadRow] = field(default_factory=list)  # oldest first; the last one is the current read
    refusal: str | None = None  # why the brain-MRI check refused the image
    patient_pk: int | None = None
    patient_mrn: str | None = None

    @property
    def current_read(self) -> ReadRow | None:
        return self.reads[-1] if self.reads else None


@dataclass(frozen=True)
class PatientTimeline:
    patient_pk: int
    mrn: str
    created_at: datetime
    scans: list[ScanEntry]  # oldest first


def _page_bounds(limit: int, offset: int) -> tuple[int, int]:
    if limit < 1 or offset < 0:
        raise ValueError("limit must be positive and offset not negative")
    return min(limit, MAX_PAGE_SIZE), offset


def list_patients(*, session: Session, search: str = "", limit: int = 25, offset: int = 0) -> PagedRows[PatientSummary]:
    """Patients whose id contains `search`, most recently scanned first, with their scan and review figures."""
    limit, offset = _page_bounds(limit, offset)
    where: list[ColumnElement[bool]] = []
    if search.strip():
        where.append(_mrn_contains(search))
    total = session.scalar(select(func.count(Patient.id)).where(*where)) or 0

    scan_stats = (
        select(
            Scan.patient_pk,
            func.count(Scan.id).label("n_scans"),
            func.max(Scan.created_at).label("last_scan_at"),
        )
        .where(Scan.patient_pk.is_not(None))
        .group_by(Scan.patient_pk)
        .subquery()
    )
    unread = (
        select(Scan.patient_pk, func.count(Scan.id).label("awaiting"))
        .where(~select(Read.id).where(Read.scan_id == Scan.id).exists())
        .group_by(Scan.patient_pk)
        .subquery()
    )
    rows = session.execute(
        select(
            Patient.id,
            Patient.mrn,
            func.coalesce(scan_stats.c.n_scans, 0),
            scan_stats.c.last_scan_at,
            func.coalesce(unread.c.awaiting, 0),
        )
        .outerjoin(scan_stats, scan_stats.c.patient_pk == Patient.id)
        .outerjoin(unread, unread.c.patient_pk == Patient.id)
        .where(*where)
        .order_by(scan_stats.c.last_scan_at.desc().nulls_last(), Patient.mrn)
        .limit(limit)
        .offset(offset)
    ).all()
    results = _latest_results(session=session, patient_ids=[row[0] for row in rows])
    summaries = [
        PatientSummary(
            patient_pk=pid,
            mrn=mrn,
            n_scans=n_scans,
            last_scan_at=last_scan_at,
            last_result=results.get(pid, (None, False))[0],
            last_result_read=results.get(pid, (None, False))[1],
            awaiting_read=awaiting,
        )
        for pid, mrn, n_scans, last_scan_at, awaiting in rows
    ]
    return PagedRows(rows=summaries, total=total, limit=limit, offset=offset)


def _latest_results(*, session: Session, patient_ids: list[int]) -> dict[int, tuple[str, bool]]:
    """For each patient, the result of their latest scan and whether it is a clinician's read."""
    if not patient_ids:
        return {}
    ranked = (
        select(
            Scan.id,
            Scan.patient_pk,
            func.row_number()
            .over(partition_by=Scan.patient_pk, order_by=(Scan.created_at.desc(), Scan.id.desc()))
            .label("rank"),
        )
        .where(Scan.patient_pk.in_(patient_ids))
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.patient_pk, ranked.c.id, Prediction.label)
        .select_from(ranked)
        .outerjoin(Prediction, Prediction.scan_id == ranked.c.id)
        .where(ranked.c.rank == 1)
        .order_by(ranked.c.patient_pk, Prediction.model_version_id)
    ).all()
    reads = current_read_of(session=session, scan_ids={scan_id for _, scan_id, _ in rows})
    predicted: dict[int, list[str]] = {}
    results: dict[int, tuple[str, bool]] = {}
    for pid, scan_id, label in rows:
        if scan_id in reads:
            # A clinician's word on the scan is its result; the models' answers are evidence.
            results[pid] = (reads[scan_id].label_text, True)
        elif label is not None and label not in predicted.setdefault(pid, []):
            predicted[pid].append(label)
    for pid, labels in predicted.items():
        if pid not in results and labels:
            results[pid] = (" / ".join(labels), False)
    return results


def _prediction_select() -> Select[Any]:
    columns = {
        "prediction_id": Prediction.id,
        "created_at": Prediction.created_at,
        "patient_pk": Scan.patient_pk,
        "patient_mrn": Patient.mrn,
        "scan_id": Scan.id,
        "original_name": Scan.original_name,
        "file_path": Scan.file_path,
        "source": Prediction.source,
        "job_id": Prediction.job_id,
        "model_version_id": ModelVersion.id,
        "model_name": ModelVersion.name,
        "framework": ModelVersion.framework,
        "artifact_path": ModelVersion.artifact_path,
        "model_sha256": ModelVersion.sha256,
        "label": Prediction.label,
        "confidence": Prediction.confidence,
        "probabilities": Prediction.probabilities,
        "needs_review": Prediction.needs_review,
    }
    return (
        select(*(column.label(name) for name, column in columns.items()))
        .select_from(Prediction)
        .join(Scan, Prediction.scan_id == Scan.id)
        .outerjoin(Patient, Scan.patient_pk == Patient.id)
        .join(ModelVersion, Prediction.model_version_id == ModelVersion.id)
    )


def _mrn_contains(text: str) -> ColumnElement[bool]:
    """Patient ids holding `text`, whatever its case (twins without a key are matched on their id as written)."""
    return or_(
        Patient.mrn_key.contains(mrn_key(text), autoescape=True),
        Patient.mrn.icontains(text.strip(), autoescape=True),
    )


def _rows(session: Session, query: Select[Any]) -> list[PredictionRow]:
    """The rows of `query`, each with its scan's current read (looked up for these scans only)."""
    found = [row._mapping for row in session.execute(query)]
    reads = current_read_of(session=session, scan_ids=(row["scan_id"] for row in found))
    return [PredictionRow(**row, **_read_fields(reads.get(row["scan_id"]))) for row in found]


def _read_fields(read: ReadRow | None) -> dict[str, Any]:
    if read is None:
        return {"read_label": None, "read_by": None, "read_at": None, "read_note": None}
    return {"read_label": read.label, "read_by": read.read_by, "read_at": read.read_at, "read_note": read.note}


def _filter_conditions(filters: PredictionFilters) -> tuple[list[ColumnElement[bool]], bool]:
    """The WHERE clauses for `filters`, and whether they need the scans and patients joined."""
    where: list[ColumnElement[bool]] = []
    if filters.labels:
        where.append(Prediction.label.in_(filters.labels))
    if filters.needs_review is not None:
        where.append(Prediction.needs_review.is_(filters.needs_review))
    needs_join = False
    if filters.read is not None:
        read = select(Read.id).where(Read.scan_id == Prediction.scan_id).exists()
        where.append(read if filters.read else ~read)
    if filters.date_from:
        where.append(Prediction.created_at >= datetime.combine(filters.date_from, time.min))
    if filters.date_to:
        where.append(Prediction.created_at < datetime.combine(filters.date_to + timedelta(days=1), time.min))
    if filters.model_version_ids:
        where.append(Prediction.model_version_id.in_(filters.model_version_ids))
    if filters.source:
        where.append(Prediction.source == filters.source)
    if filters.patient_pk is not None:
        where.append(Scan.patient_pk == filters.patient_pk)
        needs_join = True
    if filters.patient and filters.patient.strip():
        where.append(_mrn_contains(filters.patient))
        needs_join = True
    return where, needs_join


def count_predictions(*, session: Session, filters: PredictionFilters) -> int:
    where, needs_join = _filter_conditions(filters)
    query = select(func.count(Prediction.id)).select_from(Prediction)
    if needs_join:
        query = query.join(Scan, Prediction.scan_id == Scan.id).outerjoin(Patient, Scan.patient_pk == Patient.id)
    return session.scalar(query.where(*where)) or 0


def list_predictions(
    *, session: Session, filters: PredictionFilters, limit: int = 50, offset: int = 0
) -> PagedRows[PredictionRow]:
    """One page of the predictions matching `filters`, newest first."""
    limit, offset = _page_bounds(limit, offset)
    where, _ = _filter_conditions(filters)
    query = _prediction_select().where(*where).order_by(*NEWEST_FIRST).limit(limit).offset(offset)
    total = count_predictions(session=session, filters=filters)
    return PagedRows(rows=_rows(session, query), total=total, limit=limit, offset=offset)


def all_predictions(*, session: Session, filters: PredictionFilters) -> list[PredictionRow]:
    """Every prediction matching `filters`, newest first (for an export)."""
    where, _ = _filter_conditions(filters)
    return _rows(session, _prediction_select().where(*where).order_by(*NEWEST_FIRST))


def get_prediction(*, session: Session, prediction_id: int) -> PredictionRow | None:
    rows = _rows(session, _prediction_select().where(Prediction.id == prediction_id))
    return rows[0] if rows else None


def patient_timeline(*, session: Session, patient_pk: int) -> PatientTimeline | None:
    """A patient's scans, oldest first, each with the predictions of every model that saw it and its reads."""
    patient = session.get(Patient, patient_pk)
    if patient is None:
        return None
    scans = list(session.scalars(select(Scan).where(Scan.patient_pk == patient_pk).order_by(Scan.created_at, Scan.id)))
    entries = _entries(session, scans, patient.mrn)
    return PatientTimeline(patient_pk=patient.id, mrn=patient.mrn, created_at=patient.created_at, scans=entries)


def scan_entry(*, session: Session, scan_id: int) -> ScanEntry | None:
    """One scan with its predictions, reads and patient (None for a scan without one)."""
    scan = session.get(Scan, scan_id)
    if scan is None:
        return None
    mrn = session.scalar(select(Patient.mrn).where(Patient.id == scan.patient_pk)) if scan.patient_pk else None
    return _entries(session, [scan], mrn)[0]


def _entries(session: Session, scans: list[Scan], mrn: str | None) -> list[ScanEntry]:
    ids = [scan.id for scan in scans]
    predictions: dict[int, list[PredictionRow]] = {}
    query = _prediction_select().where(Scan.id.in_(ids)).order_by(ModelVersion.framework, ModelVersion.id)
    for row in _rows(session, query):
        predictions.setdefault(row.scan_id, []).append(row)
    reads = scan_reads(session=session, scan_ids=ids)
    # An image another scan holds too (another patient's, or one without a patient) keeps its file on a delete.
    shared = {
        sha256
        for sha256, count in session.execute(
            select(Scan.sha256, func.count(Scan.id))
            .where(Scan.sha256.in_({scan.sha256 for scan in scans}))
            .group_by(Scan.sha256)
        )
        if count > sum(1 for scan in scans if scan.sha256 == sha256)
    }
    return [
        ScanEntry(
            scan_id=scan.id,
            created_at=scan.created_at,
            study_date=scan.study_date,
            original_name=scan.original_name,
            file_path=scan.file_path,
            sha256=scan.sha256,
            source=scan.source,
            job_id=scan.job_id,
            width=scan.width,
            height=scan.height,
            image_format=scan.image_format,
            modality=scan.modality,
            series_description=scan.series_description,
            note=scan.note,
            file_shared=scan.sha256 in shared,
            predictions=predictions.get(scan.id, []),
            reads=reads.get(scan.id, []),
            refusal=scan.refusal,
            patient_pk=scan.patient_pk,
            patient_mrn=mrn,
        )
        for scan in scans
    ]
