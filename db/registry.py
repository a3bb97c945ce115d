"""The model registry as the Models page sees it: versions with their runs' figures, the previous one, file checks."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import ModelVersion, TrainingRun


@dataclass(frozen=True)
class VersionRow:
    id: int
    framework: str
    name: str
    is_active: bool
    run_id: int | None
    preset: str | None
    val_accuracy: float | None
    val_f1: float | None
    test_accuracy: float | None
    artifact_path: str
    sha256: str
    created_at: datetime
    activated_at: datetime | None


def version_rows(*, session: Session, framework: str) -> list[VersionRow]:
    """Every version of a framework, newest first, with the figures of the run that trained it."""
    query = (
        select(ModelVersion, TrainingRun)
        .outerjoin(TrainingRun, TrainingRun.id == ModelVersion.run_id)
        .where(ModelVersion.framework == framework)
        .order_by(ModelVersion.id.desc())
    )
    rows = []
    for version, run in session.execute(query):
        metrics = (run.metrics if run else None) or {}
        val, test = metrics.get("val") or {}, metrics.get("test") or {}
        rows.append(
            VersionRow(
                id=version.id,
                framework=version.framework,
                name=version.name,
                is_active=version.is_active,
                run_id=version.run_id,
                preset=run.preset if run else None,
                val_accuracy=val.get("accuracy"),
                val_f1=val.get("f1"),
                test_accuracy=test.get("accuracy"),
                artifact_path=version.artifact_path,
                sha256=version.sha256,
                created_at=version.created_at,
                activated_at=version.activated_at,
            )
        )
    return rows


def previous_active(*, session: Session, framework: str) -> ModelVersion | None:
    """The version that was active before the current one: the most recently activated of the others."""
    query = (
        select(ModelVersion)
        .where(
            ModelVersion.framework == framework,
            ModelVersion.is_active.is_(False),
            ModelVersion.activated_at.is_not(None),
        )
        .order_by(ModelVersion.activated_at.desc(), ModelVersion.id.desc())
        .limit(1)
    )
    return session.scalar(query)
