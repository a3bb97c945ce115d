"""How the two models do together on the validation split: each alone, their averaged answer, its calibration,
and what each needs-review threshold flags (`python -m models pair-report`).

The split is rebuilt from the CNN's training config; each predictor preprocesses the raw images as its model was
trained, so the figures are those of the app's own prediction path.
"""

from typing import Any

import numpy as np

from domain import CLASSES
from models.data.preprocessing import load_rgb
from models.data.split import config_split
from models.evaluation.metrics import classification_report
from models.inference.calibration import calibration_report, expected_calibration_error, nll
from models.inference.predictor import Predictor

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
# The needs-review threshold is the lowest whose unflagged images are right at least this often.
UNFLAGGED_ACCURACY = 0.99


def _summary(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    report = classification_report(y, probs.argmax(axis=1))
    recall = [report["per_class"][c]["recall"] for c in CLASSES]
    return {
        "accuracy": report["accuracy"],
        "f1": report["f1"],
        "lowest_recall": min(recall),
        "recall": dict(zip(CLASSES, recall, strict=True)),
        "ece": expected_calibration_error(probs, y),
        "nll": nll(probs, y),
        "confusion_matrix": report["confusion_matrix"],
    }


def review_table(y: np.ndarray, cnn: np.ndarray, mobilenet: np.ndarray) -> list[dict[str, float]]:
    """Per threshold: the share of images flagged (a model below it, or the models disagree) and the
    accuracy of the rest (where both models agree, so their shared class is the answer)."""
    agree = cnn.argmax(1) == mobilenet.argmax(1)
    rows = []
    for t in THRESHOLDS:
        unflagged = agree & (cnn.max(1) >= t) & (mobilenet.max(1) >= t)
        right = cnn.argmax(1)[unflagged] == y[unflagged]
        rows.append(
            {
                "threshold": t,
                "flagged_share": float(1 - unflagged.mean()),
                "unflagged_accuracy": float(right.mean()) if unflagged.any() else float("nan"),
            }
        )
    return rows


def pair_report(cnn: Predictor, mobilenet: Predictor, images: list[np.ndarray], y: np.ndarray) -> dict[str, Any]:
    p_cnn = np.concatenate([cnn.predict(images[i : i + 64]) for i in range(0, len(images), 64)])
    p_mnv = np.concatenate([mobilenet.predict(images[i : i + 64]) for i in range(0, len(images), 64)])
    averaged = (p_cnn + p_mnv) / 2
    table = review_table(y, p_cnn, p_mnv)
    chosen = next((row for row in table if row["unflagged_accuracy"] >= UNFLAGGED_ACCURACY), table[-1])
    return {
        "images": len(y),
        "cnn": _summary(y, p_cnn),
        "mobilenet": _summary(y, p_mnv),
        "averaged": {**_summary(y, averaged), "calibration": calibration_report(averaged, y)},
        "review_thresholds": table,
        "review_threshold": chosen,
        "agreement": float((p_cnn.argmax(1) == p_mnv.argmax(1)).mean()),
    }


def validation_images(cfg: dict[str, Any], data_dir: str | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The raw validation images of a training config's split, and their labels."""
    _, items = config_split(cfg, data_dir)
    return [load_rgb(it.path) for it in items], np.array([it.label for it in items])
