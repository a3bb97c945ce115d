"""A predictor's scores on a labelled folder: accuracy, macro and per-class precision, recall and F1, confusion matrix."""

from pathlib import Path
from typing import Any

import numpy as np

from models.data.dataset import scan_folder
from models.data.preprocessing import load_rgb
from models.evaluation.metrics import classification_report
from models.inference.predictor import Predictor


def evaluate_folder(predictor: Predictor, data_dir: str | Path, *, batch_size: int = 32) -> dict[str, Any]:
    """Accuracy, macro and per-class P/R/F1, confusion matrix and count of a model on a labelled folder."""
    items = scan_folder(data_dir)
    preds: list[int] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        probs = predictor.predict([load_rgb(it.path) for it in chunk])
        preds.extend(int(p) for p in probs.argmax(axis=1))
    report = classification_report(np.array([it.label for it in items]), np.array(preds))
    report["data"] = str(data_dir)
    return report
