"""Batch prediction's figures: how each model scored on a labelled folder."""

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from db.batches import BatchRow
from domain import CLASSES
from models.metrics import classification_report


def batch_metrics(*, rows: Iterable[BatchRow], frameworks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model, accuracy and confusion matrix (rows: truth) over the done files whose folder names a class."""
    labelled = [r for r in rows if r.status == "done" and r.true_label in CLASSES]
    metrics = {}
    for framework in frameworks:
        scored = [r for r in labelled if framework in r.results]
        if scored:
            y_true = np.array([CLASSES.index(r.true_label) for r in scored])
            y_pred = np.array([CLASSES.index(r.results[framework]["label"]) for r in scored])
            metrics[framework] = classification_report(y_true, y_pred)
    return metrics
