"""The series answer: one class for a whole series of slices, from each slice's class probabilities.

The rule (chosen on validation pseudo-series by models/evaluation/series_rule.py, README "The series rule"):
the accepted slices are ordered by how suspicious they are (1 - the probability of no tumor, both models
averaged), the k most suspicious are averaged, and the series is the tumor class that average favours when
its probability reaches `min_tumor`; otherwise "no tumor". So a series is "no tumor" only when not even its
most suspicious slices show a tumor class with confidence, and a tumor seen on a few slices of many is not
averaged away by the healthy ones.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from domain import CLASSES, TumorClass

NO_TUMOR = CLASSES.index(TumorClass.NOTUMOR)
TUMOR_CLASSES = [i for i in range(len(CLASSES)) if i != NO_TUMOR]
RULE_FILE = Path(__file__).resolve().parents[1] / "weights" / "series_rule.json"


@dataclass(frozen=True)
class SeriesRule:
    """The rule's parameters; the defaults are what the validation pseudo-series chose (series_rule.json)."""

    k: int = 1  # the most suspicious slices averaged
    min_tumor: float = 0.6  # a tumor class is the answer when the average gives it at least this
    min_slices: int = 3  # fewer accepted slices than this: too few to answer for a series, flagged

    @classmethod
    def load(cls, path: Path = RULE_FILE) -> "SeriesRule":
        """The rule written by the validation run; the defaults where the file is missing or unreadable."""
        try:
            chosen = json.loads(path.read_text())["rule"]
            return cls(k=int(chosen["k"]), min_tumor=float(chosen["min_tumor"]), min_slices=int(chosen["min_slices"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def describe(self, answer: str = "both models' probabilities averaged") -> str:
        """The rule in one sentence, as the series page and the report state it; `answer` says how each slice's
        probabilities are made from the models'."""
        slices = (
            "the most suspicious accepted slice" if self.k == 1 else f"the {self.k} most suspicious accepted slices"
        )
        return (
            f"{slices} ({answer}{'' if self.k == 1 else ', then averaged over the slices'}) "
            f"{'decides' if self.k == 1 else 'decide'}: a tumor class when it reaches {self.min_tumor:.0%} there, otherwise no tumor; "
            f"flagged below {self.min_slices} accepted slices"
        )


@dataclass(frozen=True)
class SeriesAnswer:
    """A series' class, its probabilities, the slices it rests on and whether a clinician should look again."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    deciding: list[int]  # positions (in the given order) of the slices averaged, most suspicious first
    ranking: list[int]  # every accepted slice's position, most suspicious first
    per_model: dict[str, str]  # each model's own series answer, by the same rule
    accepted: int
    refused: int
    flagged: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def suspicion(probabilities: np.ndarray) -> np.ndarray:
    """How strongly each slice (N x classes) shows some tumor: 1 - its probability of no tumor."""
    return 1.0 - probabilities[:, NO_TUMOR]


def decide(probabilities: np.ndarray, rule: SeriesRule) -> tuple[int, np.ndarray, list[int]]:
    """(class index, the deciding slices' mean probabilities, the deciding positions) for N x classes."""
    order = np.argsort(-suspicion(probabilities), kind="stable")
    deciding = order[: max(1, rule.k)]
    mean = probabilities[deciding].mean(axis=0)
    tumor = max(TUMOR_CLASSES, key=lambda c: mean[c])
    label = tumor if mean[tumor] >= rule.min_tumor else NO_TUMOR
    return label, mean, [int(i) for i in deciding]


def series_answer(
    probabilities: Mapping[str, np.ndarray],
    *,
    accepted: Sequence[bool],
    slice_flagged: Sequence[bool],
    rule: SeriesRule,
    threshold: float | None = None,
    model_names: Mapping[str, str] | None = None,
    combine: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None,
) -> SeriesAnswer | None:
    """The answer for one series.

    `probabilities` maps each model (by framework) to its N x classes probabilities, one row per slice in
    series order; `accepted` says which slices passed the brain-MRI check (a refused slice's row is ignored);
    `slice_flagged` which slices the per-slice review rule flagged. The review flag is raised when a deciding
    slice is flagged, when the models taken one by one give different series answers, when fewer than
    `rule.min_slices` slices were accepted, or when the answer's confidence is below `threshold`. `combine` makes
    each slice's one answer from the models' (their pair rule), their plain average where None. None when no
    slice was accepted or no model answered: there is nothing to answer from.
    """
    names = dict(model_names or {})
    kept = [i for i, ok in enumerate(accepted) if ok]
    refused = len(accepted) - len(kept)
    if not kept or not probabilities:
        return None
    per_model = {fw: np.asarray(p, dtype=np.float64)[kept] for fw, p in probabilities.items()}
    combined = combine(per_model) if combine and len(per_model) > 1 else np.mean(list(per_model.values()), axis=0)
    label, mean, deciding_kept = decide(combined, rule)
    ranking = [kept[i] for i in np.argsort(-suspicion(combined), kind="stable")]
    deciding = [kept[i] for i in deciding_kept]
    own = {fw: CLASSES[decide(p, rule)[0]] for fw, p in per_model.items()}
    reasons = []
    if len(kept) < rule.min_slices:
        reasons.append(f"only {len(kept)} slice(s) accepted, fewer than {rule.min_slices}")
    flagged_deciding = [i for i in deciding if slice_flagged[i]]
    if flagged_deciding:
        reasons.append(f"{len(flagged_deciding)} of the {len(deciding)} deciding slices are flagged for review")
    if threshold is not None and mean[label] < threshold:
        reasons.append(f"the series answer is {mean[label]:.0%} confident, below {threshold:.0%}")
    if len(set(own.values())) > 1:
        said = ", ".join(f"{names.get(fw, fw)} {TumorClass(c).label}" for fw, c in own.items())
        reasons.append(f"the models disagree on the series ({said})")
    return SeriesAnswer(
        label=CLASSES[label],
        confidence=float(mean[label]),
        probabilities={c: float(mean[i]) for i, c in enumerate(CLASSES)},
        deciding=deciding,
        ranking=ranking,
        per_model=own,
        accepted=len(kept),
        refused=refused,
        flagged=bool(reasons),
        reasons=reasons,
    )
