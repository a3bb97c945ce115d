"""Query functions for training runs, their per-epoch metrics and the model registry."""

from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.schema import EpochMetric, ModelVersion, TrainingRun, utcnow


def create_run(
    *,
    session: Session,
    framework: str,
    preset: str,
    params: dict[str, Any],
    dataset_path: str,
    test_path: str | None = None,
    pretrained: bool = False,
    job_id: int | None = None,
) -> TrainingRun:
    run = TrainingRun(
        framework=framework,
        preset=preset,
        params=params,
        dataset_path=dataset_path,
        test_path=test_path,
        pretrained=pretrained,
        job_id=job_id,
        status="queued",
    )
    session.add(run)
    session.flush()
    return run


def get_run(*, session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def get_run_for_job(*, session: Session, job_id: int) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).where(TrainingRun.job_id == job_id))


def start_run(*, session: Session, run_id: int, dataset_fingerprint: str | None = None) -> None:
    # A resumed run keeps the time it first started.
    values: dict[str, Any] = {
        "status": "running",
        "started_at": func.coalesce(TrainingRun.started_at, utcnow()),
        "error": None,
    }
    if dataset_fingerprint:
        values["dataset_fingerprint"] = dataset_fingerprint
    session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(**values))


def add_epoch(*, session: Session, run_id: int, epoch: int, **fields: float) -> EpochMetric:
    """Record one epoch; recording the same epoch again (a resumed run) replaces it."""
    row = session.scalar(select(EpochMetric).where(EpochMetric.run_id == run_id, EpochMetric.epoch == epoch))
    if row is None:
        row = EpochMetric(run_id=run_id, epoch=epoch)
        session.add(row)
    for name, value in fields.items():
        setattr(row, name, float(value))
    session.flush()
    return row


def finish_run(
    *,
    session: Session,
    run_id: int,
    metrics: dict[str, Any],
    artifact_path: str | None,
    artifact_sha256: str | None,
    pretrained: bool | None = None,
) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise LookupError(f"training run {run_id} does not exist")
    run.status, run.finished_at = "succeeded", utcnow()
    run.metrics, run.artifact_path, run.artifact_sha256 = metrics, artifact_path, artifact_sha256
    if pretrained is not None:
        run.pretrained = pretrained
    if run.started_at:
        run.duration_s = (run.finished_at - run.started_at).total_seconds()
    return run


def end_run(*, session: Session, run_id: int, status: str, error: str | None = None) -> None:
    """Close a run that did not succeed: "failed" with its error, or "cancelled"."""
    now = utcnow()
    run = session.get(TrainingRun, run_id)
    if run is None:
        return
    run.status, run.error, run.finished_at = status, error, now
    if run.started_at:
        run.duration_s = (now - run.started_at).total_seconds()


def register_model_version(
    *,
    session: Session,
    framework: str,
    name: str,
    artifact_path: str | Path,
    sha256: str,
    run_id: int | None = None,
    activate: bool = False,
) -> ModelVersion:
    version = ModelVersion(
        framework=framework, name=name, artifact_path=str(artifact_path), sha256=sha256, run_id=run_id
    )
    session.add(version)
    session.flush()
    if activate:
        activate_model_version(session=session, version_id=version.id)
    return version


def activate_model_version(*, session: Session, version_id: int) -> ModelVersion:
    """Make this version the one clinicians use for its framework; the previous one stays registered."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise LookupError(f"model version {version_id} does not exist")
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.framework == version.framework, ModelVersion.id != version.id)
        .values(is_active=False)
    )
    version.is_active, version.activated_at = True, utcnow()
    return version


def get_active_model(*, session: Session, framework: str) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.framework == framework, ModelVersion.is_active.is_(True))
    )


def get_model_version(*, session: Session, version_id: int) -> ModelVersion | None:
    return session.get(ModelVersion, version_id)


def list_model_versions(*, session: Session, framework: str | None = None) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(ModelVersion.id.desc())
    if framework:
        query = query.where(ModelVersion.framework == framework)
    return list(session.scalars(query))


def import_run_summary(
    *, session: Session, summary: dict[str, Any], artifact_path: str | Path, sha256: str
) -> TrainingRun:
    """Recreate a finished run (its epochs and final metrics) from the summary shipped beside a model file."""
    config = summary.get("config", {})
    run = TrainingRun(
        framework=summary["framework"],
        preset=summary.get("preset", "report"),
        params=config,
        dataset_path=str(config.get("data_dir", "")),
        dataset_fingerprint=summary.get("fingerprint"),
        test_path=config.get("test_dir"),
        pretrained=bool(summary.get("pretrained", False)),
        status="succeeded",
        duration_s=summary.get("duration_s"),
        metrics=summary.get("metrics"),
        artifact_path=str(artifact_path),
        artifact_sha256=sha256,
        started_at=utcnow(),
        finished_at=utcnow(),
    )
    session.add(run)
    session.flush()
    for row in summary.get("epochs", []):
        add_epoch(session=session, run_id=run.id, **row)
    return run
