"""Both models trained with their full recipes and exported side by side (`python -m models train-all`, which
then makes their reports): on whatever accelerator each framework sees (models/training/devices.py)."""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.training.backends import backends
from models.training.config import make_config
from models.training.export import export_run
from models.training.run import run_training
from models.training.run_types import TrainHooks
from settings import DEFAULT_MODEL_FILES

# The names the models ship under (models/weights/).
FILES = {framework: path.name for framework, path in DEFAULT_MODEL_FILES.items()}


@dataclass(frozen=True)
class Plan:
    data: str
    out: Path  # runs in out/runs/, the models and their reports in out/weights/
    preset: str = "improved"
    epochs: int | None = None  # the preset's where None
    max_images_per_class: int | None = None
    keras_sizes: Sequence[int] = (128,)  # MobileNetV2 input sizes tried; the best on validation is kept


def _accuracy(run_dir: Path) -> float:
    return float(json.loads((run_dir / "run.json").read_text())["metrics"]["val"]["accuracy"])


def best_run(run_dirs: Sequence[Path]) -> Path:
    """The finished run with the best validation accuracy; the first of equals."""
    return max(run_dirs, key=_accuracy)


class Steps:
    """Each step's name and duration, as the command's record keeps them."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.done = say, []

    def __call__(self, name: str, action: Callable[[], Any]) -> Any:
        started = time.monotonic()
        self.say(f"== {name}")
        result = action()
        self.done.append({"step": name, "seconds": round(time.monotonic() - started, 1)})
        return result


def train_and_export(plan: Plan, step: Steps) -> dict[str, Any]:
    """Train the CNN, then MobileNetV2 at each size asked (keeping the best on validation), and export both side by
    side in out/weights under the shipped names. Returns the record of what was done."""
    runs, weights = plan.out / "runs", plan.out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    echo = TrainHooks(on_epoch=lambda row: step.say(json.dumps(row, default=float)))
    record: dict[str, Any] = {"data": plan.data, "preset": plan.preset, "steps": step.done}
    candidates = [("torch", None)] + [("keras", size) for size in plan.keras_sizes]
    configs = [
        make_config(
            framework,
            plan.data,
            plan.preset,
            epochs=plan.epochs,
            max_images_per_class=plan.max_images_per_class,
            image_size=size,
            output_dir=str(runs / (f"{framework}-{size}" if size else framework)),
        )
        for framework, size in candidates
    ]
    for cfg in configs:  # missing pretrained weights stop the command before hours of the other model's training
        backends[cfg.framework].pretrained_weights(cfg)
    for cfg in configs:
        step(f"train {Path(cfg.output_dir).name}", lambda cfg=cfg: run_training(cfg, echo))
    chosen = {
        framework: best_run([Path(c.output_dir) for c in configs if c.framework == framework]) for framework in FILES
    }
    record["validation_accuracy"] = {run.name: _accuracy(run) for run in chosen.values()}
    files = {framework: weights / FILES[framework] for framework in FILES}
    for framework, run_dir in chosen.items():
        step(f"export {run_dir.name}", lambda r=run_dir, f=files[framework]: export_run(r, f))
    record["files"] = {framework: str(path) for framework, path in files.items()}
    return record
