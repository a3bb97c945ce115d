"""The leaderboard: every finished training run's figures next to the report's published ones, and run details."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.run_views import epoch_rows
from db.schema import EpochMetric, TrainingRun

# The two rows the report published, on its own test split; memory as it gives it (3.4 GB and 2.1 GB).
REFERENCE_ROWS: tuple[dict[str, Any], ...] = (
    {
        "framework": "torch",
        "accuracy": 0.9539,
        "precision": 0.95,
        "recall": 0.92,
        "f1": 0.91,
        "inference_ms": 87.0,
        "memory_mb": 3400.0,
        "pretrained": False,
    },
    {
        "framework": "keras",
        "accuracy": 0.9131,
        "precision": 0.92,
        "recall": 0.90,
        "f1": 0.89,
        "inference_ms": 63.0,
        "memory_mb": 2100.0,
        "pretrained": True,
    },
)
REFERENCE_SOURCE = "reference: the report (published)"
METRIC_NAMES = ("accuracy", "precision", "recall", "f1")
# The keys of every leaderboard row, in the order a table shows them.
# Stored by training under metrics["val"]["calibration"] (ECE over 15 bins, NLL; after is cross-fitted).
CALIBRATION_NAMES = ("temperature", "ece_before", "ece_after", "nll_before", "nll_after")
ROW_COLUMNS = (
    "reference",
    "run_id",
    "source",
    "framework",
    "preset",
    "dataset_path",
    "fingerprint",
    *METRIC_NAMES,
    *(f"test_{name}" for name in METRIC_NAMES),
    *CALIBRATION_NAMES,
    "inference_ms",
    "memory_mb",
    "model_size_mb",
    "epochs",
    "best_epoch",
    "duration_s",
    "pretrained",
    "finished_at",
)


@dataclass(frozen=True)
class RunDetail:
    """One finished run as the comparison shows it: final figures and the curve of every epoch."""

    run_id: int
    label: str
    framework: str
    metrics: dict[str, Any]
    epochs: list[dict[str, float]]


def run_label(run_id: int, framework: str, preset: str) -> str:
    return f"run {run_id} · {framework} · {preset}"


def leaderboard_rows(
    *, session: Session, fingerprint: str | None = None, framework: str | None = None, include_reference: bool = True
) -> list[dict[str, Any]]:
    """Succeeded runs (and the reference rows, which belong to no dataset), best validation accuracy first."""
    query = select(TrainingRun).where(TrainingRun.status == "succeeded", TrainingRun.metrics.is_not(None))
    if fingerprint:
        query = query.where(TrainingRun.dataset_fingerprint == fingerprint)
    if framework:
        query = query.where(TrainingRun.framework == framework)
    runs = list(session.scalars(query))
    counts = _epoch_counts(session=session, run_ids=[run.id for run in runs])
    rows = [_run_row(run, counts.get(run.id, 0)) for run in runs]
    if include_reference:
        rows += [_reference_row(ref) for ref in REFERENCE_ROWS if framework in (None, ref["framework"])]
    # Reference rows have no id; among equal accuracies the newer run comes first.
    return sorted(rows, key=lambda row: (-(row["accuracy"] or 0.0), -(row["run_id"] or 0)))


def dataset_options(*, session: Session) -> list[tuple[str, str, int]]:
    """(fingerprint, a path it was read from, number of finished runs) for each dataset runs finished on."""
    query = (
        select(TrainingRun.dataset_fingerprint, func.max(TrainingRun.dataset_path), func.count())
        .where(TrainingRun.status == "succeeded", TrainingRun.dataset_fingerprint.is_not(None))
        .group_by(TrainingRun.dataset_fingerprint)
        .order_by(func.count().desc())
    )
    return [(fp, path, count) for fp, path, count in session.execute(query)]


def run_details(*, session: Session, run_ids: list[int]) -> list[RunDetail]:
    """The runs named, in the order given; ids of runs that do not exist are left out."""
    runs = {run.id: run for run in session.scalars(select(TrainingRun).where(TrainingRun.id.in_(run_ids)))}
    epochs = epoch_rows(session=session, run_ids=list(runs))
    return [
        RunDetail(
            run_id=run.id,
            label=run_label(run.id, run.framework, run.preset),
            framework=run.framework,
            metrics=run.metrics or {},
            epochs=epochs[run.id],
        )
        for run in (runs[run_id] for run_id in run_ids if run_id in runs)
    ]


def _epoch_counts(*, session: Session, run_ids: list[int]) -> dict[int, int]:
    if not run_ids:
        return {}
    query = select(EpochMetric.run_id, func.count()).where(EpochMetric.run_id.in_(run_ids)).group_by(EpochMetric.run_id)
    return {run_id: count for run_id, count in session.execute(query)}


def _run_row(run: TrainingRun, epochs: int) -> dict[str, Any]:
    metrics = run.metrics or {}
    val, test = metrics.get("val") or {}, metrics.get("test") or {}
    return {
        "reference": False,
        "run_id": run.id,
        "source": run_label(run.id, run.framework, run.preset),
        "framework": run.framework,
        "preset": run.preset,
        "dataset_path": run.dataset_path,
        "fingerprint": run.dataset_fingerprint,
        **{name: val.get(name) for name in METRIC_NAMES},
        **{f"test_{name}": test.get(name) for name in METRIC_NAMES},
        **{name: (val.get("calibration") or {}).get(name) for name in CALIBRATION_NAMES},
        "inference_ms": val.get("inference_ms"),
        "memory_mb": metrics.get("peak_memory_mb"),
        "model_size_mb": val.get("model_size_mb"),
        "epochs": epochs,
        "best_epoch": metrics.get("best_epoch"),
        "duration_s": run.duration_s,
        "pretrained": run.pretrained,
        "finished_at": run.finished_at,
    }


def _reference_row(ref: dict[str, Any]) -> dict[str, Any]:
    # The same columns as a run's row; what the report does not give stays empty.
    return {**dict.fromkeys(ROW_COLUMNS), "reference": True, "source": REFERENCE_SOURCE, "preset": "report", **ref}
