"""Scores of a predictor on images already in memory: probabilities, the classification report and loss, speed."""

import time
from typing import Any

import numpy as np

from models.evaluation.metrics import classification_report, cross_entropy


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
