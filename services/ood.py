"""Whether a decoded image is a brain MRI slice at all, asked before any tumor class is given: a photograph,
a screenshot, a blank picture or a scan of another kind gets no tumor class. The Diagnose page and the batch
job both ask here (the method: models/evaluation/ood.py)."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from domain import Framework
from models.evaluation.ood import OodStats, OodUnavailable, header_refusal, load_stats
from models.inference.predictor import FeaturePredictor
from models.training.backends import backends
from services.predictors import MAX_LOADED, ModelFileProblem, loaded_predictor

__all__ = ["OodGate", "OodUnavailable", "OodVerdict", "gate_for", "ood_gate"]

NOT_MRI = "Not a brain MRI slice — no tumor class shown"


class ModelFile(Protocol):
    framework: str
    artifact_path: str
    sha256: str


@dataclass(frozen=True)
class OodVerdict:
    """The check's answer for one image: its score, and the threshold above which it is not a brain MRI slice."""

    score: float
    threshold: float
    percentile: float
    header: str | None = None  # why the file's DICOM header says it is not an MR image

    @property
    def flagged(self) -> bool:
        return self.header is not None or self.score > self.threshold

    def with_modality(self, modality: str | None) -> "OodVerdict":
        """This verdict for a file whose DICOM header names `modality` (None: not a DICOM, or no modality)."""
        return replace(self, header=header_refusal(modality))

    @property
    def explanation(self) -> str:
        """The header's word and the score against the threshold, in words."""
        side = "above" if self.score > self.threshold else "below"
        scored = (
            f"it scores {self.score:,.0f} on the out-of-distribution check, {side} its threshold of "
            f"{self.threshold:,.0f} ({self.percentile:g} % of the training images score below it)"
        )
        return f"{self.header}; {scored}" if self.header else scored

    @property
    def reason(self) -> str:
        """Why a flagged image got no tumor class, as a batch item records it."""
        return f"not a brain MRI slice: {self.explanation}"


@dataclass(frozen=True)
class OodGate:
    """A registered CNN model file and the statistics fitted for it."""

    artifact_path: str
    sha256: str
    predictor: FeaturePredictor
    stats: OodStats

    @property
    def name(self) -> str:
        return Path(self.artifact_path).name

    def check(self, images: Sequence[np.ndarray], modalities: Sequence[str | None] | None = None) -> list[OodVerdict]:
        """One verdict per image (HxWx3 uint8 RGB), from one forward pass of the CNN; `modalities`, where given,
        are what each file's DICOM header names (None for other files)."""
        return self.verdicts(self.predictor.features(list(images)), modalities)

    def verdicts(self, features: np.ndarray, modalities: Sequence[str | None] | None = None) -> list[OodVerdict]:
        """check's verdicts from the images' features (the predictor's `features`, or `predict_with_features`)."""
        scores = self.stats.scores(features)
        said = list(modalities) if modalities is not None else [None] * len(scores)
        return [
            OodVerdict(float(s), self.stats.threshold, self.stats.percentile).with_modality(m)
            for s, m in zip(scores, said, strict=True)
        ]


@lru_cache(maxsize=MAX_LOADED)
def ood_gate(artifact_path: str, sha256: str) -> OodGate:
    """The check for a registered CNN file, loaded once per process. OodUnavailable when no statistics were
    fitted for this very file, ModelFileProblem when the file is not the one registered (neither is cached)."""
    predictor = cast(FeaturePredictor, loaded_predictor(Framework.TORCH.value, artifact_path, sha256))
    return OodGate(artifact_path, sha256, predictor, load_stats(artifact_path, sha256))


def gate_for(models: Iterable[ModelFile]) -> tuple[OodGate | None, str]:
    """The check that goes with these models (the CNN's, the only network it is fitted for), and a sentence
    that says which statistics it uses, or why there is no check."""
    cnn = next((m for m in models if backends[m.framework].ood_features), None)
    if cnn is None:
        return None, (
            f"Whether an image is a brain MRI slice is not checked: the check needs the {Framework.TORCH.label} "
            "model, which is not in use."
        )
    try:
        gate = ood_gate(cnn.artifact_path, cnn.sha256)
    except (OodUnavailable, ModelFileProblem) as exc:
        return None, f"Whether an image is a brain MRI slice is not checked: {exc}."
    return gate, (
        f"Each image is first checked to be a brain MRI slice (statistics of {gate.name}, "
        f"threshold {gate.stats.threshold:,.0f})."
    )
