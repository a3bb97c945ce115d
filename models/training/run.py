"""A whole training run for either framework: data, split, the epoch loop, calibration and final scoring."""

import json
import os
import platform
import random
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from domain import TrainingStep
from models.evaluation.scoring import inference_ms, score, score_probs
from models.training.backends import backends
from models.training.calibrate import calibrate
from models.training.config import TrainConfig
from models.training.devices import describe as describe_device
from models.training.loop import fit
from models.training.prepare import prepare_data, prepared_predictor
from models.training.run_types import PreparedData, TrainHooks


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    best_epoch: int
    pretrained: bool
    fingerprint: str
    metrics: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def machine() -> dict[str, Any]:
    """The CPU a run's speed figures come from: they differ several-fold between machines."""
    model, flags = platform.processor() or "unknown", ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), model
        )
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "avx512": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags}


def peak_memory_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def final_metrics(cfg: TrainConfig, data: PreparedData, model_path: Path) -> dict[str, Any]:
    predictor = prepared_predictor(cfg.framework, model_path)
    calibration, probs = calibrate(predictor, model_path, data.x_val, data.y_val, seed=cfg.seed)
    val = score_probs(probs, data.y_val)
    val["calibration"] = calibration
    val["inference_ms"] = inference_ms(predictor, data.x_val)
    val["model_size_mb"] = model_path.stat().st_size / 1e6
    metrics: dict[str, Any] = {"val": val, "split": data.summary}
    if data.test is not None:
        x_test, y_test, dup = data.test
        metrics["test"] = score(predictor, x_test, y_test)
        clean = ~np.array(dup, dtype=bool)
        if clean.any():
            metrics["test_without_training_duplicates"] = score(predictor, x_test[clean], y_test[clean])
    metrics["peak_memory_mb"] = peak_memory_mb()
    return metrics


def resumable_config(run_dir: str | Path) -> TrainConfig:
    """The config of the run saved in run_dir, whichever framework trained it."""
    errors = []
    for backend in backends.values():
        try:
            config = dict(backend.load_state(run_dir)["config"])
        except FileNotFoundError as exc:
            errors.append(str(exc))
            continue
        config["extra_items"] = [tuple(item) for item in config.get("extra_items", [])]
        return TrainConfig(**{**config, "output_dir": str(run_dir)})
    raise FileNotFoundError("; ".join(errors))


def run_training(cfg: TrainConfig, hooks: TrainHooks | None = None, *, resume: bool = False) -> TrainResult:
    """Train one model from a config and score it; raises TrainingCancelled when the hooks ask.

    resume=True continues the run saved in cfg.output_dir from its last finished epoch.
    """
    hooks = hooks or TrainHooks()
    backend = backends[cfg.framework]
    seed_everything(cfg.seed)
    device = describe_device(cfg.framework)  # before the framework's first op: TRAIN_DEVICE=cpu hides TF's GPUs
    data = prepare_data(cfg)
    state = backend.load_state(cfg.output_dir) if resume else None
    if state is not None and state["split"] != data.split_digest:
        raise ValueError(
            f"cannot resume {cfg.output_dir}: its data folder no longer gives the split the run started with "
            "(images were added, removed or changed)"
        )
    pretrained = backend.pretrained_weights(cfg) is not None
    hooks.on_start({"fingerprint": data.index.fingerprint, "split": data.summary, "pretrained": pretrained})
    epochs: list[dict[str, Any]] = list(state["rows"]) if state is not None else []

    def on_epoch(row: dict[str, Any]) -> None:
        epochs.append(row)
        hooks.on_epoch(row)

    # A resumed run counts the epochs of its earlier sittings too.
    started = time.perf_counter() - sum(row["duration_s"] for row in epochs)
    trainer = backend.trainer(cfg, data, resume=state)
    best_path, last_path, best_epoch = fit(
        trainer, cfg, data, replace(hooks, on_epoch=on_epoch), suffix=backend.suffix, resume=state
    )
    hooks.on_step(TrainingStep.CALIBRATING)
    metrics = final_metrics(cfg, data, best_path)
    metrics["best_epoch"] = best_epoch
    result = TrainResult(best_path, last_path, best_epoch, pretrained, data.index.fingerprint, metrics)
    # Everything needed to rebuild the run's record elsewhere (the shipped models carry one).
    summary = {
        "framework": cfg.framework,
        "preset": cfg.preset,
        "config": cfg.to_dict(),
        "fingerprint": result.fingerprint,
        "pretrained": pretrained,
        "duration_s": time.perf_counter() - started,
        "machine": {**machine(), "accelerator": device},
        "epochs": epochs,
        "metrics": metrics,
    }
    (Path(cfg.output_dir) / "run.json").write_text(json.dumps(summary, indent=2, default=float))
    return result
