"""Read-only views of training runs for the pages: what is queued or training now, and the epochs recorded."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import EpochMetric, Job, TrainingRun, utcnow
from domain import TrainingStep

EPOCH_FIELDS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_precision",
    "val_recall",
    "val_f1",
    "lr",
    "duration_s",
    "images_per_s",
)


@dataclass(frozen=True)
class LiveRun:
    """A training run with its job's state, as the live view shows it."""

    run_id: int
    job_id: int | None
    framework: str
    preset: str
    dataset_path: str
    status: str  # the run's: queued, running, succeeded, failed, cancelled
    job_status: str | None
    epochs_planned: int
    epochs: list[dict[str, float]]
    progress_current: int
    progress_total: int
    message: str | None
    error: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    val_metrics: dict[str, Any]  # the final validation figures; empty until the run succeeds

    @property
    def phase(self) -> str:
        """queued, preparing (the worker is loading the data), training, or the run's final status."""
        if self.status == "queued" and self.job_status == "running":
            return "preparing"
        return "training" if self.status == "running" else self.status

    @property
    def val_accuracy(self) -> float | None:
        return self.val_metrics.get("accuracy")

    @property
    def step(self) -> TrainingStep | None:
        """The step under way after the last epoch (its job's message names it), while the run trains."""
        if self.phase != "training":
            return None
        return next((step for step in TrainingStep if step.message == self.message), None)

    @property
    def fraction_done(self) -> float:
        return self.progress_current / self.progress_total if self.progress_total else 0.0

    @property
    def seconds_left(self) -> float | None:
        """Training time left at the pace of the epochs so far (early stopping may end it sooner);
        None until the first epoch is recorded, since loading and deduplicating the data comes first."""
        if self.phase != "training" or not self.epochs or not self.progress_total:
            return None
        per_step = sum(row["duration_s"] for row in self.epochs) / (
            len(self.epochs) * self.progress_total / max(self.epochs_planned, 1)
        )
        return max(self.progress_total - self.progress_current, 0) * per_step

    @property
    def seconds_running(self) -> float | None:
        return (utcnow() - self.started_at).total_seconds() if self.started_at else None


def epoch_rows(*, session: Session, run_ids: Iterable[int]) -> dict[int, list[dict[str, float]]]:
    """Every recorded epoch of each run, oldest first; a run without epochs maps to an empty list."""
    ids = list(run_ids)
    rows: dict[int, list[dict[str, float]]] = {run_id: [] for run_id in ids}
    if not ids:
        return rows
    query = select(EpochMetric).where(EpochMetric.run_id.in_(ids)).order_by(EpochMetric.run_id, EpochMetric.epoch)
    for metric in session.scalars(query):
        rows[metric.run_id].append({name: getattr(metric, name) for name in EPOCH_FIELDS})
    return rows


def live_runs(*, session: Session, also: Iterable[int] = ()) -> list[LiveRun]:
    """Queued and running runs, plus the runs `also` names whatever their state, newest first."""
    wanted = list(also)
    condition = TrainingRun.status.in_(("queued", "running"))
    if wanted:
        condition = condition | TrainingRun.id.in_(wanted)
    query = (
        select(TrainingRun, Job)
        .outerjoin(Job, Job.id == TrainingRun.job_id)
        .where(condition)
        .order_by(TrainingRun.id.desc())
    )
    pairs = [(run, job) for run, job in session.execute(query)]
    epochs = epoch_rows(session=session, run_ids=[run.id for run, _ in pairs])
    return [_live_run(run, job, epochs[run.id]) for run, job in pairs]


def _live_run(run: TrainingRun, job: Job | None, epochs: list[dict[str, float]]) -> LiveRun:
    params: dict[str, Any] = run.params or {}
    return LiveRun(
        run_id=run.id,
        job_id=run.job_id,
        framework=run.framework,
        preset=run.preset,
        dataset_path=run.dataset_path,
        status=run.status,
        job_status=job.status if job else None,
        epochs_planned=int(params.get("epochs") or 0),
        epochs=epochs,
        progress_current=job.progress_current if job else 0,
        progress_total=job.progress_total if job else 0,
        message=job.message if job else None,
        error=run.error or (job.error if job else None),
        cancel_requested=bool(job and job.cancel_requested),
        created_at=run.created_at,
        started_at=run.started_at,
        val_metrics=(run.metrics or {}).get("val") or {},
    )
