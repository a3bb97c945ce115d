"""A whole training run for either framework: data, split, training loop, final scoring.

CLI: python -m models.training.run --framework torch --data DIR [--test DIR] [--preset report|improved] [--epochs N]
"""

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from domain import CLASSES, INPUT_SIZE
from models.data.dataset import Item, index_folder, index_items, load_arrays, overlap_with
from models.data.split import cap_items, split_train_val
from models.evaluation.metrics import classification_report, cross_entropy
from models.inference.calibration import apply_temperature, calibration_report
from models.training.config import TrainConfig, make_config, preset_names
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


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """Scan, deduplicate and split the data; load everything into memory as uint8 arrays."""
    from models.data.dataset import scan_folder

    items = cap_items(scan_folder(cfg.data_dir), cfg.max_images_per_class, cfg.seed)
    index = index_items(cfg.data_dir, items)
    train_idx, val_idx = split_train_val(index, val_fraction=cfg.val_fraction, seed=cfg.seed)
    train_items = [index.items[i] for i in train_idx]
    val_sha = {index.sha256[i] for i in val_idx}
    extra = []
    for path, label in cfg.extra_items:
        p = Path(path)
        # A reviewed scan identical to a validation image would leak it into training.
        if p.is_file() and label in CLASSES and hashlib.sha256(p.read_bytes()).hexdigest() not in val_sha:
            extra.append(Item(p, CLASSES.index(label)))
    x_train, y_train = load_arrays(train_items + extra, INPUT_SIZE, crop=cfg.crop)
    x_val, y_val = load_arrays([index.items[i] for i in val_idx], INPUT_SIZE, crop=cfg.crop)
    summary = {
        "train": len(train_items),
        "extra_reviewed": len(extra),
        "val": len(val_idx),
        "train_per_class": np.bincount(y_train, minlength=len(CLASSES)).tolist(),
        "val_per_class": np.bincount(y_val, minlength=len(CLASSES)).tolist(),
        "duplicates": index.duplicate_report(),
        "unreadable": index.unreadable[:20],
    }
    test = None
    if cfg.test_dir:
        test_index = index_folder(cfg.test_dir)
        x_test, y_test = load_arrays(test_index.items, INPUT_SIZE, crop=cfg.crop)
        test = (x_test, y_test, overlap_with(test_index, index))
        summary["test"] = len(test_index.items)
        summary["test_with_duplicate_in_training"] = int(sum(test[2]))
    split = hashlib.sha256(json.dumps([sorted(index.sha256[i] for i in val_idx), len(y_train)]).encode())
    soft = None
    if cfg.distill_from:
        from models.training.distill import load_targets, student_targets

        targets = load_targets(cfg.distill_from)
        train_sha = [index.sha256[i] for i in train_idx] + [""] * len(extra)
        soft = student_targets(targets, asdict(cfg), train_sha, val_sha)
        summary["distilled"] = {"images": int((~np.isnan(soft[:, 0])).sum()), "teachers": targets.teachers}
    return PreparedData(index, x_train, y_train, x_val, y_val, summary, split.hexdigest(), test, soft)


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


def predict_all(predictor: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([predictor.predict(list(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


def score_probs(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Classification report and loss of predicted probabilities."""
    report = classification_report(y, probs.argmax(axis=1))
    report["loss"] = cross_entropy(probs, y)
    return report


def score(predictor: Any, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Classification report and loss of a predictor on in-memory images."""
    return score_probs(predict_all(predictor, x), y)


def inference_ms(predictor: Any, x: np.ndarray, repeats: int = 20) -> float:
    """Median wall time of a batch-1 prediction, after one warm-up call."""
    predictor.predict([x[0]])
    times = []
    for i in range(min(repeats, len(x))):
        start = time.perf_counter()
        predictor.predict([x[i]])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def prepared_predictor(framework: str, model_path: Path) -> Any:
    """A predictor for arrays that prepare_data already made into model inputs (cropped, resized).

    The app's predictor crops a raw scan itself; on prepared arrays it must not crop them again.
    """
    from models.inference.predictor import load_predictor

    predictor = load_predictor(framework, model_path)
    predictor.crop = False
    return predictor


def calibrate(
    predictor: Any, model_path: Path, x_val: np.ndarray, y_val: np.ndarray, *, seed: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit the model's temperature on validation images, store it in the model file and the predictor.

    Returns the calibration report (ECE and NLL before and after, cross-fitted) and the calibrated
    validation probabilities.
    """
    from models.inference.predictor import store_temperature

    predictor.temperature = 1.0  # fit on the network's own probabilities, whatever the file held
    raw = predict_all(predictor, x_val)
    report = calibration_report(raw, y_val, seed=seed)
    store_temperature(predictor.framework, model_path, report["temperature"])
    predictor.temperature = report["temperature"]
    return report, apply_temperature(raw, report["temperature"])


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


def saved_state(run_dir: str | Path, framework: str) -> dict[str, Any]:
    """What a run saved after its last finished epoch (raises FileNotFoundError when it saved nothing)."""
    if framework == "torch":
        from models.training.torch_loop import load_state
    else:
        from models.training.keras_loop import load_state
    return load_state(run_dir)


def resumable_config(run_dir: str | Path) -> TrainConfig:
    """The config of the run saved in run_dir, whichever framework trained it."""
    errors = []
    for framework in ("torch", "keras"):
        try:
            config = dict(saved_state(run_dir, framework)["config"])
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
    seed_everything(cfg.seed)
    data = prepare_data(cfg)
    state = saved_state(cfg.output_dir, cfg.framework) if resume else None
    if state is not None and state["split"] != data.split_digest:
        raise ValueError(
            f"cannot resume {cfg.output_dir}: its data folder no longer gives the split the run started with "
            "(images were added, removed or changed)"
        )
    if cfg.framework == "torch":
        from models.training.torch_loop import train_torch as train_fn
    else:
        from models.training.keras_loop import train_keras as train_fn
    pretrained = False
    if cfg.framework == "keras":
        from models.nets.mobilenet import resolve_weights

        pretrained = resolve_weights(cfg) is not None
    hooks.on_start({"fingerprint": data.index.fingerprint, "split": data.summary, "pretrained": pretrained})
    epochs: list[dict[str, Any]] = list(state["rows"]) if state is not None else []

    def on_epoch(row: dict[str, Any]) -> None:
        epochs.append(row)
        hooks.on_epoch(row)

    # A resumed run counts the epochs of its earlier sittings too.
    started = time.perf_counter() - sum(row["duration_s"] for row in epochs)
    best_path, last_path, best_epoch = train_fn(cfg, data, replace(hooks, on_epoch=on_epoch), resume=state)
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
        "machine": machine(),
        "epochs": epochs,
        "metrics": metrics,
    }
    (Path(cfg.output_dir) / "run.json").write_text(json.dumps(summary, indent=2, default=float))
    return result


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options that describe a run, shared by this command and the recording one (services.training)."""
    p.add_argument("--framework", choices=["torch", "keras"])
    p.add_argument("--data", help="folder with one subfolder per class")
    p.add_argument("--test", help="optional labelled folder scored at the end")
    p.add_argument("--preset", default="report", choices=preset_names())
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--augment", choices=["none", "moderate", "high"])
    p.add_argument("--seed", type=int)
    p.add_argument("--fine-tune-epoch", type=int)
    p.add_argument("--max-images-per-class", type=int)
    p.add_argument("--no-pretrained", action="store_true", help="MobileNetV2 from random init")
    p.add_argument("--bf16", action="store_true", help="CNN: bfloat16 autocast in training steps (faster on CPU)")
    p.add_argument("--weights", help="MobileNetV2 ImageNet no-top .h5 file")
    p.add_argument("--init-from", help="CNN: start from this checkpoint's weights (trained on the same split)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--distill-from", help="CNN: teacher targets (python -m models.training.distill) to learn from")
    p.add_argument("--distill-weight", type=float, help="share of the loss given to the teachers (default 0.5)")
    p.add_argument("--distill-temperature", type=float, help="temperature of the distillation loss (default 2)")
    p.add_argument("--mixup", type=float, dest="mixup_alpha", help="CNN: mixup with Beta(alpha, alpha) weights")
    p.add_argument("--output-dir", help="where checkpoints go (default: ARTIFACT_DIR/runs/<id>)")
    p.add_argument("--threads", type=int, help="framework threads (default: TORCH_THREADS / TF_THREADS)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config from the command line; caps the frameworks' threads as asked."""
    from models.inference.threads import cap_threads
    from settings import get_settings

    settings = get_settings()
    cap_threads(args.threads or settings.torch_threads, args.threads or settings.tf_threads)
    if not args.framework or not args.data:
        raise SystemExit("--framework and --data are needed")
    overrides = {
        "test_dir": args.test,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "augment": args.augment,
        "seed": args.seed,
        "fine_tune_epoch": args.fine_tune_epoch,
        "max_images_per_class": args.max_images_per_class,
        "pretrained": False if args.no_pretrained else None,
        "bf16": True if args.bf16 else None,
        "weights_path": args.weights,
        "init_from": args.init_from,
        "weight_decay": args.weight_decay,
        "warmup_epochs": args.warmup_epochs,
        "distill_from": args.distill_from,
        "distill_weight": args.distill_weight,
        "distill_temperature": args.distill_temperature,
        "mixup_alpha": args.mixup_alpha,
    }
    cfg = make_config(args.framework, args.data, args.preset, **overrides)
    cfg.output_dir = args.output_dir or str(settings.artifact_dir / "runs" / f"cli-{int(time.time())}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Train the CNN (torch) or MobileNetV2 (keras) on a labelled folder, without recording the "
        "run in the database (python -m services.training records it)."
    )
    add_train_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR from its last epoch")
    args = p.parse_args(argv)
    echo = TrainHooks(on_epoch=lambda row: print(json.dumps(row), flush=True))
    if args.resume:
        if args.threads:
            from models.inference.threads import cap_threads

            cap_threads(args.threads, args.threads)
        result = run_training(resumable_config(args.resume), echo, resume=True)
    else:
        result = run_training(config_from_args(args), echo)
    print(json.dumps({"best": str(result.best_path), "metrics": result.metrics}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
