"""Accuracy of the CNN's float and int8 ONNX exports (models/inference/onnx_export.py) on the model's own validation
split: what decides whether the int8 export may be used."""

from pathlib import Path
from typing import Any

import numpy as np

from domain import Framework
from models.data.preprocessing import load_rgb
from models.data.split import config_split
from models.inference.model_meta import file_sha256
from models.inference.onnx_export import export_path
from models.inference.predictor import OnnxPredictor


def int8_accuracy(model: str | Path, config: dict[str, Any], data_dir: str | None = None) -> dict[str, Any]:
    """Accuracy of the CNN's fp32 and int8 exports on the split of its training `config` (from `data_dir` where the
    folder moved), how many images change class and how far the probabilities move."""
    _, val = config_split(config, data_dir)
    sha = file_sha256(model)
    fp32, int8 = (OnnxPredictor(Framework.TORCH, model, sha256=sha, int8=q) for q in (False, True))
    labels = np.array([item.label for item in val])
    probs: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    for start in range(0, len(val), 32):
        images = [load_rgb(item.path, size=None) for item in val[start : start + 32]]
        probs["fp32"].append(fp32.predict(images))
        probs["int8"].append(int8.predict(images))
    a, b = np.concatenate(probs["fp32"]), np.concatenate(probs["int8"])
    accuracy = {name: float((p.argmax(1) == labels).mean() * 100) for name, p in (("fp32", a), ("int8", b))}
    return {
        "validation_images": len(val),
        "accuracy_fp32": round(accuracy["fp32"], 2),
        "accuracy_int8": round(accuracy["int8"], 2),
        "change_points": round(accuracy["int8"] - accuracy["fp32"], 2),
        "images_whose_class_changes": int((a.argmax(1) != b.argmax(1)).sum()),
        "max_abs_probability_difference": float(np.abs(a - b).max()),
        "file_mb": {q: round(export_path(model, int8=q == "int8").stat().st_size / 1e6, 1) for q in probs},
    }
