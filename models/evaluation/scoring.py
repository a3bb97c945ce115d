"""A predictor's scores: on images already in memory (probabilities, the classification report and loss, speed), or
on a labelled folder."""

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.data.dataset import scan_folder
from models.data.preprocessing import load_rgb
from models.evaluation.metrics import classification_report, cross_entropy
from models.inference.predictor import Predictor


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
