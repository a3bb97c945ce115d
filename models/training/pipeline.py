"""Both models trained with their full recipes, then every report the shipped models carry, in one command
(`python -m models train-all`): on whatever accelerator each framework sees (models/training/devices.py)."""

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

FILES = {"torch": "cnn_default.pth", "keras": "mobilenetv2_default.keras"}


@dataclass(frozen=True)
class Plan:
    data: str
    out: Path  # runs in out/runs/, the models and their reports in out/weights/
    preset: str = "improved"
    epochs: int | None = None  # the preset's where None
    max_images_per_class: int | None = None
    keras_sizes: Sequence[int] = (128,)  # MobileNetV2 input sizes tried; the best on validation is kept
    reports: bool = True


def _accuracy(run_dir: Path) -> float:
    return float(json.loads((run_dir / "run.json").read_text())["metrics"]["val"]["accuracy"])


def train_all(plan: Plan, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the CNN, then MobileNetV2 at each size asked (keeping the best on validation), export both beside
    each other in out/weights, and (with plan.reports) make their out-of-distribution statistics, pair report,
    heatmap figures and series rule there. Returns (and writes to out/train-all.json) what was done and how long
    each step took."""
    from models.cli import main as models_command

    runs, weights = plan.out / "runs", plan.out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    echo = TrainHooks(on_epoch=lambda row: say(json.dumps(row, default=float)))
    record: dict[str, Any] = {"data": plan.data, "preset": plan.preset, "steps": []}

    def step(name: str, action: Callable[[], Any]) -> Any:
        started = time.monotonic()
        say(f"== {name}")
        result = action()
        record["steps"].append({"step": name, "seconds": round(time.monotonic() - started, 1)})
        return result

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
    chosen: dict[str, Path] = {}
    for cfg in configs:
        run_dir = Path(cfg.output_dir)
        step(f"train {run_dir.name}", lambda cfg=cfg: run_training(cfg, echo))
        best = chosen.get(cfg.framework)
        if best is None or _accuracy(run_dir) > _accuracy(best):
            chosen[cfg.framework] = run_dir
    record["validation_accuracy"] = {run.name: _accuracy(run) for run in chosen.values()}
    files = {framework: weights / FILES[framework] for framework in FILES}
    for framework, run_dir in chosen.items():
        step(f"export {run_dir.name}", lambda r=run_dir, f=files[framework]: export_run(r, f))
    if plan.reports:
        cnn, mobilenet = str(files["torch"]), str(files["keras"])
        pair = str(weights / "pair.json")
        for name, argv in (
            ("out-of-distribution check", ["ood", "--model", cnn, "--data", plan.data]),
            (
                "pair report",
                ["pair-report", "--cnn", cnn, "--mobilenet", mobilenet, "--data", plan.data, "--out", pair],
            ),
            (
                "heatmap figures",
                ["heatmap-quality", "--cnn", cnn, "--mobilenet", mobilenet, "--data", plan.data]
                + ["--out", str(weights / "heatmaps.json")],
            ),
            (
                "series rule",
                ["series-rule", "--cnn", cnn, "--mobilenet", mobilenet, "--data", plan.data, "--pair", pair]
                + ["--out", str(weights / "series_rule.json")],
            ),
        ):
            code = step(name, lambda argv=argv: models_command(argv))
            if code:
                raise ValueError(f"{name} failed (exit status {code})")
    record["files"] = {framework: str(path) for framework, path in files.items()}
    (plan.out / "train-all.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
