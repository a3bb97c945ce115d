"""What a training loop is given and what it reports: shared by the run (models.training.run) and both loops."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from domain import TrainingStep
from models.data.dataset import DatasetIndex
from models.evaluation.metrics import classification_report, cross_entropy


class TrainingCancelled(Exception):
    """Raised inside a training loop when its hooks ask it to stop."""


def _noop(*_args: Any) -> None:
    return None


@dataclass
class TrainHooks:
    """How a run reports to whoever started it (a Celery task, the CLI) and learns it should stop."""

    on_start: Callable[[dict[str, Any]], None] = _noop
    on_progress: Callable[[int, int, int, int], None] = _noop  # epoch, epochs, batch, batches
    on_epoch: Callable[[dict[str, Any]], None] = _noop
    should_cancel: Callable[[], bool] = lambda: False
    on_step: Callable[[TrainingStep], None] = _noop  # a step after the last epoch begins (calibrating, ...)


@dataclass
class PreparedData:
    index: DatasetIndex
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    summary: dict[str, Any]
    split_digest: str  # names the exact split, so a resumed run can prove it continues on the same one
    test: tuple[np.ndarray, np.ndarray, list[bool]] | None = None
    # The teachers' soft target per training image (NaN rows: none, the label alone), when distilling.
    soft_train: np.ndarray | None = None


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
