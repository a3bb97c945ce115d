"""SQLAlchemy 2.0 schema: patients, scans, predictions, clinicians' reads, training runs, model versions, jobs,
DICOM series, users, sessions and the audit log."""

import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from domain import (
    CLASSES,
    FINISHED_STATES,
    FRAMEWORKS,
    AuditAction,
    BatchItemStatus,
    Framework,
    JobKind,
    JobStatus,
    ModelFileRole,
    ReadLabel,
    Role,
    ScanSource,
    SendStatus,
    SeriesSource,
    SeriesStatus,
    SessionEnd,
    SliceStatus,
    TumorClass,
)

__all__ = ["CLASSES", "FINISHED_STATES", "FRAMEWORKS"]

# Constraints get predictable names, so a later migration (SQLite's batch mode included) can drop them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}
# Ids are never re-used after a delete (SQLite's AUTOINCREMENT): a page holding an old id can't reach a new row.
NO_ID_REUSE = {"sqlite_autoincrement": True}


def one_of(column: str, values: type[StrEnum], *, nullable: bool = False) -> CheckConstraint:
    """A CHECK that keeps a column within the vocabulary of domain.py."""
    listed = ", ".join(f"'{v.value}'" for v in values)
    condition = f"{column} IN ({listed})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=column)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def mrn_key(mrn: str) -> str:
    """What two patient ids are compared by: NFC, without surrounding whitespace, case folded."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", mrn).strip().casefold())


def _mrn_key_default(context: Any) -> str:
    return mrn_key(context.get_current_parameters()["mrn"])


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(primary_key=True)
    # The patient id as the hospital wrote it (NFC); `mrn_key` is what matching compares (db.scans.mrn_key).
    mrn: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    # NULL only for a twin that existed before ids were matched this way, until an admin merges it.
    mrn_key: Mapped[str | None] = mapped_column(String(256), unique=True, index=True, default=_mrn_key_default)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    scans: Mapped[list["Scan"]] = relationship(back_populates="patient", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"Patient(id={self.id}, mrn={self.mrn!r})"


class Scan(Base):
    """One stored image. The file lives once under upload_dir, addressed by its sha256."""

    __tablename__ = "scans"
    __table_args__ = (
        UniqueConstraint("patient_id", "sha256", name="uq_scan_patient_sha"),
        one_of("source", ScanSource),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The patient's key (its column keeps the name patient_id); the patient's MRN is `patient.mrn`.
    patient_pk: Mapped[int | None] = mapped_column(
        "patient_id", ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    file_path: Mapped[str] = mapped_column(String(512))
    original_name: Mapped[str] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(16))  # "upload" or "batch"
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    image_format: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    study_date: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(256))
    note: Mapped[str | None] = mapped_column(Text)  # e.g. "middle frame 12 of 24"
    # Why the brain-MRI check refused the image (a batch keeps such a scan for a clinician, without answers).
    refusal: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    patient: Mapped[Patient | None] = relationship(back_populates="scans")
    predictions: Mapped[list["Prediction"]] = relationship(back_populates="scan", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"Scan(id={self.id}, patient_pk={self.patient_pk}, sha256={self.sha256[:12]!r})"


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("scan_id", "model_version_id", name="uq_prediction_scan_model"),
        Index("ix_predictions_filters", "label", "needs_review"),
        one_of("label", TumorClass),
        one_of("source", ScanSource),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    label: Mapped[str] = mapped_column(String(16))
    probabilities: Mapped[dict[str, Any]]
    confidence: Mapped[float] = mapped_column(Float)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="upload")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    scan: Mapped[Scan] = relationship(back_populates="predictions")
    model_version: Mapped["ModelVersion"] = relationship()

    def __repr__(self) -> str:
        return f"Prediction(id={self.id}, scan_id={self.scan_id}, label={self.label!r}, conf={self.confidence:.3f})"


class Read(Base):
    """A clinician's read of a scan: the final class (or not assessable), a note, who and when.

    Append-only (the database refuses to change what a read says): a later read of the scan supersedes an
    earlier one, and both stay. The models' predictions stay beside them as evidence.
    """

    __tablename__ = "reads"
    __table_args__ = (one_of("label", ReadLabel), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    read_by: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    read_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # Set on the reads migration 0006 made from the review of this prediction (reviews were per prediction).
    from_prediction_id: Mapped[int | None] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"Read(id={self.id}, scan_id={self.scan_id}, label={self.label!r}, read_by={self.read_by!r})"


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (one_of("framework", Framework), one_of("status", JobStatus), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    framework: Mapped[str] = mapped_column(String(16))
    preset: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    dataset_path: Mapped[str] = mapped_column(String(512))
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    test_path: Mapped[str | None] = mapped_column(String(512))
    pretrained: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    # Final figures: {"val": {...}, "test": {...}, "split": {...}} with accuracy, macro and per-class P/R/F1,
    # confusion matrix, inference ms, peak memory MB, model size MB.
    metrics: Mapped[dict[str, Any] | None]
    artifact_path: Mapped[str | None] = mapped_column(String(512))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    epochs: Mapped[list["EpochMetric"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="EpochMetric.epoch"
    )

    def __repr__(self) -> str:
        return f"TrainingRun(id={self.id}, framework={self.framework!r}, status={self.status!r})"


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_epoch_run_epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    train_acc: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float] = mapped_column(Float)
    val_acc: Mapped[float] = mapped_column(Float)
    val_precision: Mapped[float] = mapped_column(Float)
    val_recall: Mapped[float] = mapped_column(Float)
    val_f1: Mapped[float] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    images_per_s: Mapped[float] = mapped_column(Float)

    run: Mapped[TrainingRun] = relationship(back_populates="epochs")

    def __repr__(self) -> str:
        return f"EpochMetric(run_id={self.run_id}, epoch={self.epoch}, val_acc={self.val_acc:.3f})"


class ModelVersion(Base):
    """A model clinicians can use; exactly one is active per framework."""

    __tablename__ = "model_versions"
    __table_args__ = (one_of("framework", Framework), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    framework: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id", ondelete="SET NULL"))
    artifact_path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    run: Mapped[TrainingRun | None] = relationship()

    def __repr__(self) -> str:
        return f"ModelVersion(id={self.id}, framework={self.framework!r}, name={self.name!r}, active={self.is_active})"


class ModelFile(Base):
    """A file a model version's answers depend on besides its model file (ONNX exports, sidecar, out-of-distribution
    statistics and report, pair report) and the sha256 it had when it was made: checked each time it is opened."""

    __tablename__ = "model_files"
    __table_args__ = (UniqueConstraint("model_version_id", "role"), one_of("role", ModelFileRole), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"ModelFile(version={self.model_version_id}, role={self.role!r}, sha256={self.sha256[:12]!r})"


class Job(Base):
    """A background job's record; pages read this, never Celery's result backend."""

    __tablename__ = "jobs"
    __table_args__ = (one_of("kind", JobKind), one_of("status", JobStatus), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    celery_id: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # "train", "batch", "selfcheck"
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    params: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    progress_current: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Who submitted it: a clinician may cancel their own jobs, only an admin anyone's.
    submitted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # One per form submission: a double click submits the same key, and gets the job the first click made.
    idempotency_key: Mapped[str | None] = mapped_column(String(64), unique=True)

    def __repr__(self) -> str:
        return f"Job(id={self.id}, kind={self.kind!r}, status={self.status!r})"


class BatchItem(Base):
    """One file of a batch job: its outcome survives a worker restart, so a re-run skips it."""

    __tablename__ = "batch_items"
    __table_args__ = (
        UniqueConstraint("job_id", "rel_path", name="uq_batch_item_path"),
        one_of("status", BatchItemStatus),
        one_of("true_label", TumorClass, nullable=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    rel_path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16))  # "done", "error", "skipped"
    patient_mrn: Mapped[str | None] = mapped_column(String(64))
    true_label: Mapped[str | None] = mapped_column(String(16))
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"))
    results: Mapped[dict[str, Any] | None]  # {framework: {label, probabilities, confidence, model_version_id}}
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"BatchItem(job_id={self.job_id}, rel_path={self.rel_path!r}, status={self.status!r})"


class BatchTombstone(Base):
    """A batch file whose scan was deleted: a re-run of its job skips it instead of creating the scan (and its
    patient) again. Only a digest of the file's path is kept, since a path can name the patient."""

    __tablename__ = "batch_tombstones"
    __table_args__ = (UniqueConstraint("job_id", "path_sha256", name="uq_batch_tombstone_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    path_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"BatchTombstone(job_id={self.job_id}, path_sha256={self.path_sha256[:12]!r})"


class User(Base):
    """A person who signs in. Never deleted (the audit log names them): disabled instead."""

    __tablename__ = "users"
    __table_args__ = (one_of("role", Role), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        # Never the hash: reprs end up in logs.
        return f"User(id={self.id}, username={self.username!r}, role={self.role!r}, disabled={self.disabled})"


class AuditEntry(Base):
    """One recorded action. The app only ever inserts these rows; the database refuses updates and deletes."""

    __tablename__ = "audit_log"
    __table_args__ = (
        one_of("action", AuditAction),
        Index("ix_audit_log_username_at", "username", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
        Index("ix_audit_log_patient_at", "patient_mrn", "at"),
        Index("ix_audit_log_client_at", "client", "at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # No foreign keys: an entry outlives whatever it names (a deleted patient's record of access stays).
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(64))  # for a failed sign-in, the name that was typed
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(128))  # e.g. "scan 12", "model version 3", "user 2"
    patient_mrn: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(64))  # a keyed hash of the browser session's id
    client: Mapped[str | None] = mapped_column(String(64))
    # A chain: each entry's sha256 covers its fields and the previous entry's hash (db/audit.py, `verify`).
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))

    def __repr__(self) -> str:
        return f"AuditEntry(id={self.id}, action={self.action!r}, username={self.username!r}, target={self.target!r})"


class DicomSeries(Base):
    """A DICOM series received from the PACS or a scanner, its slices predicted together and answered as one.

    Of the DICOM header only what links results back is kept (README "Which header fields are kept")."""

    __tablename__ = "dicom_series"
    __table_args__ = (one_of("source", SeriesSource), one_of("status", SeriesStatus), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    # The PatientID as the header writes it; the series goes with its patient's record when that is deleted.
    patient_pk: Mapped[int | None] = mapped_column(
        "patient_id", ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    modality: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(256))
    series_number: Mapped[int | None] = mapped_column(Integer)
    study_date: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str | None] = mapped_column(String(128))  # calling AE title, DICOMweb server or user name
    status: Mapped[str] = mapped_column(String(16), default="receiving", index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # {label, confidence, probabilities, deciding, ranking, per_model, accepted, refused, flagged, reasons,
    #  rule, models: [{framework, version_id, name, sha256}]}
    answer: Mapped[dict[str, Any] | None]
    # The results' own series in the same study: the report (SR) and the heatmap captures (SC).
    report_series_uid: Mapped[str | None] = mapped_column(String(64))
    capture_series_uid: Mapped[str | None] = mapped_column(String(64))
    first_received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)

    patient: Mapped[Patient | None] = relationship()
    slices: Mapped[list["SeriesSlice"]] = relationship(
        back_populates="series", cascade="all, delete-orphan", order_by="SeriesSlice.id"
    )

    def __repr__(self) -> str:
        return f"DicomSeries(id={self.id}, series_uid={self.series_uid!r}, status={self.status!r})"


class SeriesSlice(Base):
    """One slice of a series: an instance, or one frame of a multi-frame instance."""

    __tablename__ = "series_slices"
    __table_args__ = (
        UniqueConstraint("series_id", "sop_instance_uid", "frame", name="uq_series_slice_instance_frame"),
        one_of("status", SliceStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("dicom_series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    frame: Mapped[int] = mapped_column(Integer, default=1)  # 1-based, as DICOM counts frames
    instance_number: Mapped[int | None] = mapped_column(Integer)
    # Where the slice lies along the series' normal (mm), from its position and orientation: the slice order.
    position: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="received")
    staged_file: Mapped[str | None] = mapped_column(String(512))  # waiting to be predicted; removed after
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id", ondelete="SET NULL"), index=True)
    results: Mapped[dict[str, Any] | None]  # {framework: {label, probabilities, confidence, model_version_id}}
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)  # why it was skipped or could not be read
    # The original pixel values (after the modality rescale) for window and level, as a 16-bit PNG with
    # value = stored * values_scale + values_offset, and the header's own window.
    values_file: Mapped[str | None] = mapped_column(String(512))
    values_scale: Mapped[float | None] = mapped_column(Float)
    values_offset: Mapped[float | None] = mapped_column(Float)
    window_center: Mapped[float | None] = mapped_column(Float)
    window_width: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    series: Mapped[DicomSeries] = relationship(back_populates="slices")

    def __repr__(self) -> str:
        return f"SeriesSlice(series_id={self.series_id}, frame={self.frame}, status={self.status!r})"


class DicomSend(Base):
    """Results of a series waiting for, or delivered to, the PACS: the DICOM files are kept until delivered."""

    __tablename__ = "dicom_sends"
    __table_args__ = (one_of("status", SendStatus), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("dicom_series.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    what: Mapped[str] = mapped_column(String(256))  # e.g. "report and 3 heatmap captures", "amended report"
    destination: Mapped[str] = mapped_column(String(256))  # "AE@host:port" or the STOW-RS URL
    folder: Mapped[str] = mapped_column(String(512))
    objects: Mapped[list[Any]]  # [{"file", "sop_class_uid", "sop_instance_uid", "sent": bool}]
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"DicomSend(id={self.id}, series_id={self.series_id}, status={self.status!r})"


class UserSession(Base):
    """A signed-in browser as the server keeps it. The browser holds a random token in an HttpOnly cookie; only
    its sha256 is here. Ended sessions stay (ended_at, ended_reason) until the sweep removes old ones."""

    __tablename__ = "sessions"
    __table_args__ = (one_of("ended_reason", SessionEnd, nullable=True), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # the role signed in with: a changed role ends the session
    # None until the browser has taken its cookie (through a one-time code whose hash is handoff_hash).
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    handoff_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    handoff_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    client: Mapped[str | None] = mapped_column(String(64))  # the address the server's socket saw at sign-in
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    ended_reason: Mapped[str | None] = mapped_column(String(16))

    def __repr__(self) -> str:
        # Never the hashes: reprs end up in logs.
        return f"UserSession(id={self.id}, user_id={self.user_id}, ended_reason={self.ended_reason!r})"


class SignInThrottle(Base):
    """Failed sign-ins in a row for one key: a user name (as a keyed hash), a client address, or an admin's name
    from one address. Sign-ins lock the key's row first, so parallel guesses at one name queue one behind the other."""

    __tablename__ = "sign_in_throttle"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    name_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # so an unlock finds every row of a name
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)

    def __repr__(self) -> str:
        return f"SignInThrottle(failures={self.failures}, last_failure_at={self.last_failure_at})"


class AppSecret(Base):
    """Random keys made when the database was migrated (the audit log's hash key), unless settings give one."""

    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))

    def __repr__(self) -> str:
        return f"AppSecret(name={self.name!r})"
