"""The epoch loop both frameworks share: train one epoch, evaluate, save, schedule, stop early.

The framework's part is a trainer (torch_loop.TorchTrainer, keras_loop.KerasTrainer) its backend builds, set up
and resumed in its constructor; the files go through one CheckpointSaver.
"""

import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.evaluation.metrics import classification_report, cross_entropy
from models.training.checkpoint import CheckpointSaver
from models.training.config import TrainConfig
from models.training.run_types import PreparedData, TrainHooks
from models.training.schedule import EarlyStopping, LRSchedule


@dataclass(frozen=True)
class EpochTraining:
    """What one epoch of training steps reports: its mean loss and accuracy, and the images it saw."""

    loss: float
    accuracy: float
    images: int


class Trainer(Protocol):
    """One framework's training of one run, stepped by `fit`."""

    def phase(self, epoch: int) -> tuple[float, int]:
        """The base learning rate of the phase `epoch` belongs to, and that phase's first epoch."""
        ...

    def begin_epoch(self, epoch: int) -> bool:
        """Ready the epoch (its seeds); True when a new phase starts with it."""
        ...

    def train_one_epoch(self, epoch: int, lr: float, hooks: TrainHooks) -> EpochTraining: ...

    def scored_weights(self) -> AbstractContextManager[None]:
        """The weights that are evaluated and saved (the weight average, where there is one) for the block."""
        ...

    def evaluate(self) -> np.ndarray: ...

    def save_model(self, path: Path, epoch: int, row: dict[str, Any]) -> None: ...

    def save_state(self, out: Path, progress: dict[str, Any]) -> None: ...


def epoch_row(
    *,
    epoch: int,
    probs: np.ndarray,
    y_val: np.ndarray,
    train_loss: float,
    train_acc: float,
    lr: float,
    images: int,
    started: float,
    train_time: float,
) -> dict[str, Any]:
    """The per-epoch record both training loops write: training figures and macro validation metrics."""
    report = classification_report(y_val, probs.argmax(1))
    return {
        "epoch": epoch,
        "train_loss": float(train_loss),
        "train_acc": float(train_acc),
        "val_loss": cross_entropy(probs, y_val),
        "val_acc": report["accuracy"],
        "val_precision": report["precision"],
        "val_recall": report["recall"],
        "val_f1": report["f1"],
        "lr": float(lr),
        "duration_s": time.perf_counter() - started,
        "images_per_s": images / train_time if train_time else 0.0,
    }


def fit(
    trainer: Trainer,
    cfg: TrainConfig,
    data: PreparedData,
    hooks: TrainHooks,
    *,
    suffix: str,
    resume: dict[str, Any] | None = None,
) -> tuple[Path, Path, int]:
    """Train from the first epoch, or the one after `resume`'s; returns (best model file, last model file, best epoch).

    After every epoch the state holds what a later process needs to continue exactly where this one was: the
    trainer's (weights, optimizer, weight average, random states) and the loop's (schedule, early stopping, best
    epoch, every epoch's row, the split).
    """
    saver = CheckpointSaver(trainer, Path(cfg.output_dir), suffix)
    base_lr, phase_start = trainer.phase(resume["epoch"] if resume is not None else 1)
    schedule, stopper = LRSchedule(cfg, base_lr), EarlyStopping(cfg.early_stop_patience)
    first_epoch, rows = 1, []
    if resume is not None:
        schedule.restore(resume["schedule"])
        stopper = EarlyStopping(**resume["stopper"])
        saver.resume(resume)
        rows = list(resume["rows"])
        first_epoch = cfg.epochs + 1 if resume["stopped_early"] else resume["epoch"] + 1
    for epoch in range(first_epoch, cfg.epochs + 1):
        if trainer.begin_epoch(epoch):
            base_lr, phase_start = trainer.phase(epoch)
            schedule, stopper = LRSchedule(cfg, base_lr), EarlyStopping(cfg.early_stop_patience)
        lr = schedule.at_epoch_start(epoch, first_epoch=phase_start)
        started = time.perf_counter()
        trained = trainer.train_one_epoch(epoch, lr, hooks)
        train_time = time.perf_counter() - started
        with trainer.scored_weights():
            row = epoch_row(
                epoch=epoch,
                probs=trainer.evaluate(),
                y_val=data.y_val,
                train_loss=trained.loss,
                train_acc=trained.accuracy,
                lr=lr,
                images=trained.images,
                started=started,
                train_time=train_time,
            )
            saver.save_checkpoint(epoch, row)
        stop = stopper.should_stop(row["val_loss"])
        schedule.at_epoch_end(row["val_loss"])
        rows.append(row)
        progress = {
            "epoch": epoch,
            "config": asdict(cfg),
            "split": data.split_digest,
            "schedule": schedule.state(),
            "stopper": asdict(stopper),
            "rows": rows,
            "stopped_early": stop,
        }
        saver.save_state(progress)
        hooks.on_epoch(row)
        if stop:
            break
    return saver.best_path, saver.last_path, saver.best_epoch
