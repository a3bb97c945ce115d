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
from services.model_files import CompanionFiles
from services.predictors import MAX_LOADED, ModelFileProblem, loaded_predictor

__all__ = ["OodGate", "OodUnavailable", "OodVerdict", "gate_for", "header_verdicts", "ood_gate"]

NOT_MRI = "Not a brain MRI slice — no tumor class shown"
HEADER_RULE_ALONE = "A DICOM file whose header names another modality than MR still gets no tumor class."


class ModelFile(Protocol):
    framework: str
    artifact_path: str
    sha256: str


@dataclass(frozen=True)
class OodVerdict:
    """The check's answer for one image: its score and the threshold above which it is not a brain MRI slice (both
    None where no statistics are fitted, and the DICOM header's word is all there is)."""

    score: float | None
    threshold: float | None
    percentile: float | None
    header: str | None = None  # why the file's DICOM header says it is not an MR image

    @property
    def flagged(self) -> bool:
        if self.header is not None:
            return True
        return self.score is not None and self.threshold is not None and self.score > self.threshold

    def with_modality(self, modality: str | None) -> "OodVerdict":
        """This verdict for a file whose DICOM header names `modality` (None: not a DICOM, or no modality)."""
        return replace(self, header=header_refusal(modality))

    @property
    def explanation(self) -> str:
        """The header's word and the score against the threshold, in words."""
        if self.score is None or self.threshold is None:
            return f"{self.header}" if self.header else "the out-of-distribution check has no statistics"
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


def header_verdicts(modalities: Sequence[str | None]) -> list[OodVerdict | None]:
    """The DICOM header's word alone, for when the CNN has no statistics: a flagged verdict for each file whose
    header names another modality than MR, None for the others (nothing is known against them)."""
    return [None if header_refusal(m) is None else OodVerdict(None, None, None).with_modality(m) for m in modalities]


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
    files = CompanionFiles.of(artifact_path, sha256)
    stats = load_stats(artifact_path, sha256, check=files.check)  # the bytes checked are the bytes used
    files.save()
    return OodGate(artifact_path, sha256, predictor, stats)


def gate_for(models: Iterable[ModelFile]) -> tuple[OodGate | None, str]:
    """The check that goes with these models (the CNN's, the only network it is fitted for), and a sentence
    that says which statistics it uses, or why there is no check."""
    cnn = next((m for m in models if backends[m.framework].ood_features), None)
    if cnn is None:
        return None, (
            f"Whether an image is a brain MRI slice is not checked: the check needs the {Framework.TORCH.label} "
            f"model, which is not in use. {HEADER_RULE_ALONE}"
        )
    try:
        gate = ood_gate(cnn.artifact_path, cnn.sha256)
    except (OodUnavailable, ModelFileProblem) as exc:
        return None, f"Whether an image is a brain MRI slice is not checked: {exc}. {HEADER_RULE_ALONE}"
    return gate, (
        f"Each image is first checked to be a brain MRI slice (statistics of {gate.name}, "
        f"threshold {gate.stats.threshold:,.0f})."
    )
