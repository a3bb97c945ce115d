"""What a training run keeps in its folder, for both frameworks: `last` after every epoch, `best` whenever validation
accuracy beat every earlier epoch's, and the state a later process resumes from; each file written whole."""

import shutil
from pathlib import Path
from typing import Any, Protocol

from models.data.files import write_whole
from models.inference.model_meta import sidecar_path


class Saves(Protocol):
    def save_model(self, path: Path, epoch: int, row: dict[str, Any]) -> None: ...

    def save_state(self, out: Path, progress: dict[str, Any]) -> None: ...


def copy_whole(source: Path, target: Path) -> None:
    """Copy a file whole or not at all (models/data/files.py)."""
    with source.open("rb") as src:
        write_whole(target, lambda dst: shutil.copyfileobj(src, dst))


class CheckpointSaver:
    """The run's model files and its resumable state, under `out`, named `last<suffix>` and `best<suffix>`."""

    def __init__(self, trainer: Saves, out: Path, suffix: str) -> None:
        self.trainer = trainer
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.last_path, self.best_path = out / f"last{suffix}", out / f"best{suffix}"
        self.best_acc, self.best_epoch = -1.0, 0

    def resume(self, state: dict[str, Any]) -> None:
        self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]

    def save_checkpoint(self, epoch: int, row: dict[str, Any]) -> None:
        """The trainer's scored weights as `last`, copied to `best` when their validation accuracy is the best yet."""
        self.trainer.save_model(self.last_path, epoch, row)
        if row["val_acc"] > self.best_acc:
            self.best_acc, self.best_epoch = row["val_acc"], epoch
            copy_whole(self.last_path, self.best_path)
            if sidecar_path(self.last_path).is_file():
                copy_whole(sidecar_path(self.last_path), sidecar_path(self.best_path))

    def save_state(self, progress: dict[str, Any]) -> None:
        """The loop's progress and the best epoch so far, with what the trainer needs to go on."""
        self.trainer.save_state(self.out, {**progress, "best_acc": self.best_acc, "best_epoch": self.best_epoch})
