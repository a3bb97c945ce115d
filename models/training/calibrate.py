"""A model's temperature fitted on the validation images of the run that trained it, and stored with the model."""

from pathlib import Path
from typing import Any

import numpy as np

from models.evaluation.scoring import predict_all
from models.inference.calibration import apply_temperature, calibration_report
from models.training.backends import backend_for_file, backends
from models.training.config import TrainConfig
from models.training.prepare import prepare_data, prepared_predictor


def calibrate(
    predictor: Any, model_path: Path, x_val: np.ndarray, y_val: np.ndarray, *, seed: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit the model's temperature on validation images, store it in the model file and the predictor.

    Returns the calibration report (ECE and NLL before and after, cross-fitted) and the calibrated
    validation probabilities.
    """
    predictor.temperature = 1.0  # fit on the network's own probabilities, whatever the file held
    raw = predict_all(predictor, x_val)
    report = calibration_report(raw, y_val, seed=seed)
    backends[predictor.framework].store_temperature(model_path, report["temperature"])
    predictor.temperature = report["temperature"]
    return report, apply_temperature(raw, report["temperature"])


def calibrate_file(model_path: str | Path, data_dir: str | None = None) -> dict[str, Any]:
    """Fit a saved model's temperature on its run's validation split (rebuilt from the config it carries; from
    `data_dir` where the folder moved); returns the calibration report. For models saved before training did it."""
    path = Path(model_path)
    backend = backend_for_file(path)
    config = dict(backend.model_meta(path).get("config", {}))
    if not config:
        raise ValueError(f"{path} carries no training config, so its validation split cannot be rebuilt")
    known = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}
    known.update(extra_items=[], data_dir=data_dir or known["data_dir"], test_dir=None)
    cfg = TrainConfig(**known)
    data = prepare_data(cfg)
    report, _ = calibrate(prepared_predictor(backend.framework, path), path, data.x_val, data.y_val, seed=cfg.seed)
    return report
