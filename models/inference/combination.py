"""One answer from both models' probabilities, by the rule the pair report chose on validation
(models/evaluation/answer_rules.py): one model alone, their average, a weighted average, or a stacking model."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from domain import CLASSES
from models.inference.calibration import apply_temperature

MODELS = ("cnn", "mobilenet")
# Each model in the words people read, where the answer is named after it.
MODEL_NAMES = {"cnn": "the CNN", "mobilenet": "MobileNetV2"}
# From the simplest to the most fitted: a tie in accuracy goes to the earlier.
RULES = ("cnn", "mobilenet", "average", "weighted", "weighted_per_class", "stacked")
# Log-probabilities are clipped here before stacking, so one model's 0 does not decide alone.
LOG_FLOOR = 1e-6


def log_features(cnn: np.ndarray, mobilenet: np.ndarray) -> np.ndarray:
    """The stacking model's inputs: both models' log-probabilities side by side, and a constant."""
    logs = np.log(np.clip(np.concatenate([cnn, mobilenet], axis=1), LOG_FLOOR, 1.0))
    return np.concatenate([logs, np.ones((len(logs), 1))], axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def combine(name: str, params: dict[str, Any], cnn: np.ndarray, mobilenet: np.ndarray) -> np.ndarray:
    """The rule's probabilities (before its temperature) for rows of both models' probabilities."""
    cnn, mobilenet = np.asarray(cnn, dtype=np.float64), np.asarray(mobilenet, dtype=np.float64)
    if name == "cnn":
        return cnn
    if name == "mobilenet":
        return mobilenet
    if name == "average":
        return (cnn + mobilenet) / 2
    if name in ("weighted", "weighted_per_class"):
        w = np.asarray(params["cnn_weight"], dtype=np.float64)  # one weight, or one per class
        mixed = w * cnn + (1 - w) * mobilenet
        return mixed / mixed.sum(axis=1, keepdims=True)
    if name == "stacked":
        return softmax(log_features(cnn, mobilenet) @ np.asarray(params["coefficients"], dtype=np.float64))
    raise ValueError(f"unknown combination rule {name!r}")


@dataclass(frozen=True)
class Combination:
    """A rule with its fitted parameters and the temperature that calibrates its answer."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0

    def probabilities(self, cnn: np.ndarray, mobilenet: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the combined answer, one row per image."""
        return apply_temperature(combine(self.name, self.params, cnn, mobilenet), self.temperature)

    @property
    def single_model(self) -> str | None:
        """The model whose answer this rule is, where it is one model alone."""
        return self.name if self.name in MODELS else None

    def describe(self) -> str:
        """The rule in words."""
        if self.single_model:
            return f"{MODEL_NAMES[self.name]}'s answer"
        if self.name == "average":
            return "the average of both models' probabilities"
        if self.name == "weighted":
            w = float(self.params["cnn_weight"])
            return f"a weighted average ({MODEL_NAMES['cnn']} {w:.2f}, {MODEL_NAMES['mobilenet']} {1 - w:.2f})"
        if self.name == "weighted_per_class":
            return "a weighted average with one weight per class"
        return "a stacking model over both models' log-probabilities"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "temperature": self.temperature}

    @classmethod
    def of(cls, data: dict[str, Any]) -> "Combination":
        """A combination from its record; ValueError where the record does not describe one."""
        name, params = str(data["name"]), dict(data.get("params") or {})
        if name not in RULES:
            raise ValueError(f"unknown combination rule {name!r}")
        rule = cls(name, params, float(data.get("temperature", 1.0)))
        check = np.full((1, len(CLASSES)), 1 / len(CLASSES))
        if rule.probabilities(check, check).shape != check.shape:  # parameters of the wrong shape
            raise ValueError(f"the parameters of combination rule {name!r} do not fit {len(CLASSES)} classes")
        return rule
