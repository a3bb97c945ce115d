"""Turn a finished training run into a compact shipped model with its record beside it.

python -m models.training.export --run-dir var/train/cnn-improved --out models/weights/cnn_default.pth
"""

import argparse
import json
from pathlib import Path
from typing import Any

from domain import Framework
from models.inference.model_meta import read_sidecar, write_sidecar
from models.training.config import TrainConfig
from models.training.run import prepare_data, prepared_predictor, score


def export_run(run_dir: str | Path, out: str | Path, *, check: bool = True) -> dict[str, Any]:
    """Write the run's best model to `out` (fp16 weights for the CNN, no optimizer state) and `out`.json."""
    run_dir, out = Path(run_dir), Path(out)
    summary = json.loads((run_dir / "run.json").read_text())
    framework = summary["framework"]
    if framework != Framework.of_file(out):
        raise ValueError(f"{out} does not match the run's framework ({framework})")
    out.parent.mkdir(parents=True, exist_ok=True)
    if framework == "torch":
        from models.nets.cnn import load_checkpoint, save_checkpoint

        model, ckpt = load_checkpoint(run_dir / "best.pth")
        keep = {k: ckpt[k] for k in ("epoch", "config", "metrics", "tta", "normalize", "temperature") if k in ckpt}
        save_checkpoint(out, model, extra=keep, half=True)
    else:
        import keras

        keras.models.load_model(run_dir / "best.keras", compile=False).save(out)
        write_sidecar(out, read_sidecar(run_dir / "best.keras"))
    summary["shipped_size_mb"] = out.stat().st_size / 1e6
    if check:
        # The compact file must score like the full-precision one on the same validation split.
        cfg_fields = {k: v for k, v in summary["config"].items() if k in TrainConfig.__dataclass_fields__}
        cfg_fields["extra_items"] = []
        data = prepare_data(TrainConfig(**cfg_fields))
        shipped = score(prepared_predictor(framework, out), data.x_val, data.y_val)
        summary["shipped_val_accuracy"] = shipped["accuracy"]
        summary["full_precision_val_accuracy"] = summary["metrics"]["val"]["accuracy"]
    meta = read_sidecar(out) if framework == "keras" else {}
    write_sidecar(out, {**meta, "run": summary})
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Export a training run's best model as a compact shipped model.")
    p.add_argument("--run-dir", required=True, help="the run's output folder (has run.json and best.*)")
    p.add_argument("--out", required=True, help="e.g. models/weights/cnn_default.pth")
    p.add_argument("--no-check", action="store_true", help="skip re-scoring the compact model")
    args = p.parse_args(argv)
    summary = export_run(args.run_dir, args.out, check=not args.no_check)
    print(
        json.dumps(
            {k: summary.get(k) for k in ("shipped_size_mb", "shipped_val_accuracy", "full_precision_val_accuracy")}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
