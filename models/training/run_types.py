"""What a training run is given (its data) and how it reports to whoever started it (its hooks)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from domain import TrainingStep
from models.data.dataset import DatasetIndex


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
