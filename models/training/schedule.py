"""Learning-rate schedules and early stopping shared by both frameworks' training loops."""

import math
from dataclasses import dataclass

from models.training.config import TrainConfig


@dataclass
class LRSchedule:
    """The learning rate for each epoch: warmup + cosine, or reduce-on-plateau of the validation loss."""

    cfg: TrainConfig
    base_lr: float
    lr: float = 0.0
    best_loss: float = math.inf
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        self.lr = self.base_lr

    def at_epoch_start(self, epoch: int, first_epoch: int = 1, last_epoch: int | None = None) -> float:
        """epoch is 1-based; returns the rate to use for it."""
        if self.cfg.schedule == "cosine":
            last = last_epoch or self.cfg.epochs
            span = max(1, last - first_epoch + 1)
            step = epoch - first_epoch
            # A short run keeps most of its epochs for the decay.
            warmup = min(self.cfg.warmup_epochs, span // 3)
            if step < warmup:
                # With BatchNorm statistics still settling, a full-size first step overshoots.
                self.lr = self.base_lr * (step + 1) / (warmup + 1)
            else:
                progress = (step - warmup) / max(1, span - warmup)
                self.lr = self.cfg.min_lr + 0.5 * (self.base_lr - self.cfg.min_lr) * (1 + math.cos(math.pi * progress))
        return self.lr

    def state(self) -> dict[str, float]:
        return {"lr": self.lr, "best_loss": self.best_loss, "bad_epochs": self.bad_epochs}

    def restore(self, state: dict[str, float]) -> None:
        self.lr, self.best_loss, self.bad_epochs = state["lr"], state["best_loss"], int(state["bad_epochs"])

    def at_epoch_end(self, val_loss: float) -> None:
        if self.cfg.schedule != "plateau":
            return
        if val_loss < self.best_loss - 1e-4:
            self.best_loss, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.cfg.plateau_patience:
            self.lr = max(self.cfg.min_lr, self.lr * self.cfg.plateau_factor)
            self.bad_epochs = 0


@dataclass
class EarlyStopping:
    patience: int
    best_loss: float = math.inf
    bad_epochs: int = 0

    def should_stop(self, val_loss: float) -> bool:
        if val_loss < self.best_loss - 1e-4:
            self.best_loss, self.bad_epochs = val_loss, 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience
