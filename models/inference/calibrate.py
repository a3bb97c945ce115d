"""Fit and store the temperature of a saved model on the validation split of the run that trained it.

python -m models.inference.calibrate --model models/weights/mobilenetv2_default.keras [--data DIR]

Training fits the temperature by itself; this command is for models saved before it did, or after the
validation data moved (--data points at the same images in their new place).
"""

import argparse
import json
from pathlib import Path

from domain import Framework
from models.inference.model_meta import model_meta
from models.training.config import TrainConfig
from models.training.run import calibrate, prepare_data, prepared_predictor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fit a saved model's temperature on its run's validation split.")
    p.add_argument("--model", required=True)
    p.add_argument("--data", help="the training folder, if it moved since the model was trained")
    args = p.parse_args(argv)
    path = Path(args.model)
    framework = Framework.of_file(path)
    config = dict(model_meta(path).get("config", {}))
    if not config:
        raise SystemExit(f"{path} carries no training config, so its validation split cannot be rebuilt")
    fields = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}
    fields.update(extra_items=[], data_dir=args.data or fields["data_dir"], test_dir=None)
    cfg = TrainConfig(**fields)
    data = prepare_data(cfg)
    report, _ = calibrate(prepared_predictor(framework, path), path, data.x_val, data.y_val, seed=cfg.seed)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
