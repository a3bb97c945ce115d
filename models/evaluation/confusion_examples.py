"""Each validation image's prediction by one model file, cached beside it as `<file>.val_predictions.json`, so that
a model card shows examples of the model's most frequent confusions; the cache is tied to the file's sha256.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domain import CLASSES
from models.data.dataset import Item
from models.data.preprocessing import load_rgb
from models.data.split import config_split
from models.evaluation.metrics import confusion_matrix

SUFFIX = ".val_predictions.json"
CHUNK = 32  # images decoded and predicted together


@dataclass(frozen=True)
class ValPredictions:
    """One model's answer for every validation image of its run's split."""

    model_sha256: str
    files: tuple[str, ...]  # relative to the data folder
    labels: tuple[int, ...]
    predicted: tuple[int, ...]
    confidence: tuple[float, ...]

    def matrix(self) -> list[list[int]]:
        """The confusion matrix of these predictions (rows: the true class)."""
        return confusion_matrix(np.array(self.labels), np.array(self.predicted)).tolist()

    def examples(self, true: str, predicted: str, n: int) -> list[tuple[str, float]]:
        """Up to n (file, confidence) of images of class `true` read as `predicted`, the most confident first."""
        t, p = CLASSES.index(true), CLASSES.index(predicted)
        wrong = [
            (f, c) for f, y, q, c in zip(self.files, self.labels, self.predicted, self.confidence) if (y, q) == (t, p)
        ]
        return sorted(wrong, key=lambda fc: -fc[1])[:n]


def cache_path(model_path: str | Path) -> Path:
    return Path(str(model_path) + SUFFIX)


def validation_items(config: Mapping[str, Any], data_dir: str | Path) -> list[Item]:
    """The validation images of a run's split, rebuilt from its config as training built them."""
    return config_split(dict(config), data_dir)[1]


def predict_items(predictor: Any, items: list[Item], root: str | Path, *, model_sha256: str) -> ValPredictions:
    """Predict every item once with a loaded predictor (its own preprocessing and temperature)."""
    probs = [predictor.predict([load_rgb(it.path) for it in items[i : i + CHUNK]]) for i in range(0, len(items), CHUNK)]
    p = np.concatenate(probs) if probs else np.zeros((0, len(CLASSES)))
    return ValPredictions(
        model_sha256,
        tuple(str(it.path.relative_to(root)) for it in items),
        tuple(it.label for it in items),
        tuple(int(k) for k in p.argmax(axis=1)),
        tuple(float(c) for c in p.max(axis=1)),
    )


def save(predictions: ValPredictions, model_path: str | Path) -> Path:
    path = cache_path(model_path)
    rows = zip(predictions.files, predictions.labels, predictions.predicted, predictions.confidence)
    images = ",\n".join(
        json.dumps({"file": f, "label": CLASSES[y], "predicted": CLASSES[p], "confidence": round(c, 4)})
        for f, y, p, c in rows
    )
    tmp = path.with_suffix(".tmp")
    # One image a line, so that a new model's cache reads as a plain diff.
    tmp.write_text(f'{{"model_sha256": {json.dumps(predictions.model_sha256)}, "images": [\n{images}\n]}}\n')
    tmp.replace(path)
    return path


def load(model_path: str | Path, model_sha256: str) -> ValPredictions | None:
    """The cached predictions of this very model file; None when there are none or they are another file's."""
    path = cache_path(model_path)
    try:
        data = json.loads(path.read_text())
        if data["model_sha256"] != model_sha256:
            return None
        images = data["images"]
        return ValPredictions(
            model_sha256,
            tuple(str(row["file"]) for row in images),
            tuple(CLASSES.index(row["label"]) for row in images),
            tuple(CLASSES.index(row["predicted"]) for row in images),
            tuple(float(row["confidence"]) for row in images),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
