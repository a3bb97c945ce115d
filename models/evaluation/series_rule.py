"""Choosing the series rule on pseudo-series built from the validation split, and scoring it on held-out ones.

A pseudo-series is n validation slices, a share of one tumor class and the rest "no tumor" (or all "no tumor");
the rule is tuned on one half of the validation images and scored on the other (`python -m models series-rule`;
docs/design/series.md).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from domain import CLASSES
from models.inference.series_rule import NO_TUMOR, TUMOR_CLASSES, SeriesRule, decide

# Series lengths and the share of tumor slices in a tumor series, each scenario drawn SERIES_PER_CASE times.
LENGTHS = (12, 24)
TUMOR_SHARES = (0.1, 0.25, 0.5)
SERIES_PER_CASE = 300
K_GRID = (1, 2, 3, 4, 6)
MIN_TUMOR_GRID = tuple(round(x, 2) for x in np.arange(0.30, 0.91, 0.05))
MIN_SLICES = 3
REVIEW_THRESHOLD = 0.7  # the app's default per-slice review threshold (settings.confidence_threshold)


@dataclass(frozen=True)
class PseudoSeries:
    truth: int  # class index
    length: int
    share: float  # of tumor slices (0 for a no-tumor series)
    members: np.ndarray  # indices into the validation half


def pseudo_series(labels: np.ndarray, pool: np.ndarray, seed: int) -> list[PseudoSeries]:
    """Every scenario's series drawn from the images `pool` (indices into labels), each without repeats."""
    rng = np.random.default_rng(seed)
    normal = pool[labels[pool] == NO_TUMOR]
    out = []
    for length in LENGTHS:
        for _ in range(SERIES_PER_CASE):
            out.append(PseudoSeries(NO_TUMOR, length, 0.0, rng.choice(normal, length, replace=False)))
        for cls in TUMOR_CLASSES:
            tumor = pool[labels[pool] == cls]
            for share in TUMOR_SHARES:
                m = max(1, round(share * length))
                for _ in range(SERIES_PER_CASE):
                    members = np.concatenate(
                        [rng.choice(tumor, m, replace=False), rng.choice(normal, length - m, replace=False)]
                    )
                    out.append(PseudoSeries(cls, length, share, rng.permutation(members)))
    return out


Rule = Callable[[np.ndarray], int]


def rule_of(params: SeriesRule) -> Rule:
    return lambda probs: decide(probs, params)[0]


def mean_of_all(probs: np.ndarray) -> int:
    """Baseline: the class of the mean over every slice."""
    return int(probs.mean(axis=0).argmax())


def majority(probs: np.ndarray) -> int:
    """Baseline: the class most slices are given (ties to the lower index)."""
    return int(np.bincount(probs.argmax(axis=1), minlength=len(CLASSES)).argmax())


def any_tumor_slice(probs: np.ndarray) -> int:
    """Baseline: the tumor class of the most suspicious slice whenever any slice's top class is a tumor."""
    top = probs.argmax(axis=1)
    if (top != NO_TUMOR).any():
        return int(top[np.argmax(1 - probs[:, NO_TUMOR])])
    return NO_TUMOR


def score(rule: Rule, series: list[PseudoSeries], probs: np.ndarray) -> dict[str, Any]:
    """Series accuracy per true class, their mean (each class weighs the same), and the no-tumor series read as
    a tumor (false alarms) and the tumor series read as no tumor (misses)."""
    answers = np.array([rule(probs[s.members]) for s in series])
    truth = np.array([s.truth for s in series])
    per_class = {CLASSES[c]: float((answers[truth == c] == c).mean()) for c in range(len(CLASSES))}
    tumor = truth != NO_TUMOR
    return {
        "balanced_accuracy": float(np.mean(list(per_class.values()))),
        "per_class": per_class,
        "false_alarm": float((answers[~tumor] != NO_TUMOR).mean()),
        "missed_tumor": float((answers[tumor] == NO_TUMOR).mean()),
        "by_share": {
            f"{share:g}": float((answers[tumor & (shares == share)] == truth[tumor & (shares == share)]).mean())
            for shares in [np.array([s.share for s in series])]
            for share in TUMOR_SHARES
        },
    }


def flag_rates(
    series: list[PseudoSeries],
    cnn: np.ndarray,
    mnv: np.ndarray,
    answer: np.ndarray,
    rule: SeriesRule,
    review: tuple[float, bool],
) -> dict[str, float]:
    """How often the series flag is raised, by each of its parts, against flagging a series whenever any of its
    slices is flagged. `answer`: the models' one answer per slice; review: (threshold, on disagreement) of the
    per-slice review rule, whose threshold the series answer is held to as well."""
    threshold, on_disagreement = review
    disagree = cnn.argmax(1) != mnv.argmax(1)
    slice_flag = (answer.max(1) < threshold) | (disagree & on_disagreement)
    counts = {"flagged": 0, "deciding_slice_flagged": 0, "models_disagree": 0, "answer_below_threshold": 0}
    literal = 0
    for s in series:
        label, mean, deciding = decide(answer[s.members], rule)
        parts = {
            "deciding_slice_flagged": bool(slice_flag[s.members][deciding].any()),
            "models_disagree": decide(cnn[s.members], rule)[0] != decide(mnv[s.members], rule)[0],
            "answer_below_threshold": bool(mean[label] < threshold),
        }
        for name, raised in parts.items():
            counts[name] += raised
        counts["flagged"] += any(parts.values())
        literal += bool(slice_flag[s.members].any())
    return {**{name: n / len(series) for name, n in counts.items()}, "any_slice_flagged_instead": literal / len(series)}


def choose(series: list[PseudoSeries], probs: np.ndarray) -> tuple[SeriesRule, list[dict[str, Any]]]:
    """The (k, min_tumor) with the best balanced series accuracy; ties go to fewer false alarms, then smaller k."""
    grid = []
    for k in K_GRID:
        for min_tumor in MIN_TUMOR_GRID:
            rule = SeriesRule(k=k, min_tumor=min_tumor, min_slices=MIN_SLICES)
            grid.append({"k": k, "min_tumor": min_tumor, **score(rule_of(rule), series, probs)})
    best = max(grid, key=lambda row: (round(row["balanced_accuracy"], 4), -row["false_alarm"], -row["k"]))
    return SeriesRule(k=best["k"], min_tumor=best["min_tumor"], min_slices=MIN_SLICES), grid


def halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation images in two halves, each class split evenly."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for cls in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        first.append(idx[: len(idx) // 2])
        second.append(idx[len(idx) // 2 :])
    return np.concatenate(first), np.concatenate(second)


def report(
    probs: dict[str, np.ndarray],
    seed: int,
    answer: np.ndarray | None = None,
    review: tuple[float, bool] = (REVIEW_THRESHOLD, True),
    answer_from: str = "both models' plain average",
) -> dict[str, Any]:
    """The rule chosen on one half's pseudo-series and scored on the other's. answer: the models' one answer per
    validation image (the pair rule's, cross-fitted), their plain average where None; review: the per-slice
    review rule (threshold, on disagreement)."""
    labels = probs["labels"]
    both = answer if answer is not None else (probs["cnn"] + probs["mobilenet"]) / 2
    tune, held_out = halves(labels, seed)
    tune_series, test_series = pseudo_series(labels, tune, seed), pseudo_series(labels, held_out, seed + 1)
    rule, grid = choose(tune_series, both)
    rules: dict[str, Rule] = {
        "chosen": rule_of(rule),
        "mean of all slices": mean_of_all,
        "majority of slices": majority,
        "most suspicious slice whenever any slice reads tumor": any_tumor_slice,
    }
    held = {name: score(r, test_series, both) for name, r in rules.items()}
    held["chosen rule, CNN alone"] = score(rule_of(rule), test_series, probs["cnn"])
    held["chosen rule, MobileNetV2 alone"] = score(rule_of(rule), test_series, probs["mobilenet"])
    return {
        "rule": {"k": rule.k, "min_tumor": rule.min_tumor, "min_slices": rule.min_slices},
        "description": rule.describe() if answer is None else rule.describe("each slice's one answer by the pair rule"),
        "answer_from": answer_from,
        "review": {"threshold": review[0], "on_disagreement": review[1]},
        "validation_images": int(len(labels)),
        "halves": {"tune": int(len(tune)), "held_out": int(len(held_out))},
        "pseudo_series": {
            "lengths": list(LENGTHS),
            "tumor_shares": list(TUMOR_SHARES),
            "per_case": SERIES_PER_CASE,
            "per_half": len(test_series),
        },
        "held_out": held,
        "flags_held_out": flag_rates(test_series, probs["cnn"], probs["mobilenet"], both, rule, review),
        "grid_on_tuning_half": grid,
    }
