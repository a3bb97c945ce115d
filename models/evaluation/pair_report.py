"""How the two models answer together on the validation split (`python -m models pair-report`): each alone, the
rule that makes their one answer and its temperature (models/evaluation/answer_rules.py), and the review rule:
the confidence of that answer below which, or the disagreement of the models on which, a scan is flagged.

Every figure of a rule is cross-fitted over folds that keep near-duplicate images together: an image is scored by
a rule and a temperature fitted on the other folds only.
"""

from typing import Any

import numpy as np

from domain import CLASSES
from models.evaluation.answer_rules import FOLDS, SEED, choose, grouped_folds
from models.evaluation.metrics import classification_report
from models.inference.calibration import expected_calibration_error, nll
from models.inference.combination import RULES

REVIEW_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.50, 0.995, 0.01))
# The review rule's promise: answers it does not flag are right at least this often, while it flags at most this
# share of scans. The least-flagging rule that keeps the first is chosen; the second is then met or not.
UNFLAGGED_ACCURACY = 0.995
FLAGGED_SHARE = 0.15


def summary(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    report = classification_report(y, probs.argmax(axis=1))
    recall = [report["per_class"][c]["recall"] for c in CLASSES]
    return {
        "accuracy": report["accuracy"],
        "right": int((probs.argmax(axis=1) == y).sum()),
        "f1": report["f1"],
        "lowest_recall": min(recall),
        "recall": dict(zip(CLASSES, recall, strict=True)),
        "ece": expected_calibration_error(probs, y),
        "nll": nll(probs, y),
        "confusion_matrix": report["confusion_matrix"],
    }


def _row(y: np.ndarray, answer: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    right = answer.argmax(axis=1)[~flagged] == y[~flagged]
    return {
        "flagged_share": float(flagged.mean()),
        "unflagged_accuracy": float(right.mean()) if right.size else float("nan"),
    }


def flags(answer: np.ndarray, disagree: np.ndarray, threshold: float, on_disagreement: bool) -> np.ndarray:
    """The images the review rule flags: the answer's confidence below the threshold, or (if asked) the models
    disagree."""
    return (answer.max(axis=1) < threshold) | (disagree & on_disagreement)


def review_table(y: np.ndarray, answer: np.ndarray, disagree: np.ndarray) -> list[dict[str, Any]]:
    """Per threshold, flagging on the answer's confidence alone and also on disagreement: the share of images
    flagged and how often the answer is right on the rest."""
    return [
        {
            "threshold": t,
            "on_disagreement": on_disagreement,
            **_row(y, answer, flags(answer, disagree, t, on_disagreement)),
        }
        for on_disagreement in (False, True)
        for t in REVIEW_THRESHOLDS
    ]


def choose_review(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The row flagging least whose unflagged answers are right at least UNFLAGGED_ACCURACY of the time (ties: the
    more accurate, then without disagreement, then the lower threshold); where none is, the most accurate."""
    kept = [row for row in table if row["unflagged_accuracy"] >= UNFLAGGED_ACCURACY]
    if kept:
        best = min(
            kept,
            key=lambda r: (r["flagged_share"], -r["unflagged_accuracy"], r["on_disagreement"], r["threshold"]),
        )
    else:
        best = max(table, key=lambda r: (np.nan_to_num(r["unflagged_accuracy"]), -r["flagged_share"]))
    meets = best["unflagged_accuracy"] >= UNFLAGGED_ACCURACY and best["flagged_share"] <= FLAGGED_SHARE
    return {**best, "meets_target": bool(meets)}


def held_out_review(y: np.ndarray, answer: np.ndarray, disagree: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """The review rule chosen on the other folds and applied to each fold: what choosing it costs in optimism."""
    flagged = np.zeros(len(y), dtype=bool)
    chosen = []
    for f in np.unique(folds):
        out = folds == f
        row = choose_review(review_table(y[~out], answer[~out], disagree[~out]))
        chosen.append({"threshold": row["threshold"], "on_disagreement": row["on_disagreement"]})
        flagged[out] = flags(answer[out], disagree[out], row["threshold"], row["on_disagreement"])
    return {**_row(y, answer, flagged), "chosen_per_fold": chosen}


def pair_report(
    cnn: np.ndarray, mobilenet: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int = FOLDS
) -> dict[str, Any]:
    """The report from both models' probabilities on the validation images, their labels and duplicate groups."""
    fold = grouped_folds(y, groups, folds, SEED)
    rule, fits = choose(cnn, mobilenet, y, fold)
    answer = fits[rule.name].calibrated
    disagree = cnn.argmax(axis=1) != mobilenet.argmax(axis=1)
    table = review_table(y, answer, disagree)
    return {
        "images": int(len(y)),
        "cnn": summary(y, cnn),
        "mobilenet": summary(y, mobilenet),
        "agreement": float(1 - disagree.mean()),
        "cross_fitting": {
            "folds": folds,
            "seed": SEED,
            "duplicate_groups": int(len(np.unique(groups))),
            "images_per_fold": np.bincount(fold).tolist(),
        },
        "answer": {
            "rule": rule.as_dict(),
            "cross_fitted": summary(y, answer),
            "candidates": {name: summary(y, fits[name].calibrated) for name in RULES},
        },
        "review": {
            "target": {"unflagged_accuracy": UNFLAGGED_ACCURACY, "flagged_share": FLAGGED_SHARE},
            "chosen": choose_review(table),
            "held_out": held_out_review(y, answer, disagree, fold),
            "table": table,
        },
    }


README_THRESHOLDS = (0.7, 0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99)


def format_pair_report(report: dict[str, Any]) -> str:
    """The report's rules and review thresholds as Markdown tables, as the README shows them."""
    answer, review = report["answer"], report["review"]
    chosen = answer["rule"]["name"]
    lines = [
        f"{report['images']} validation images, {report['cross_fitting']['folds']} folds "
        f"({report['cross_fitting']['duplicate_groups']} duplicate groups); the rule: {chosen}, "
        f"temperature {answer['rule']['temperature']:.2f}",
        "",
        "| rule (cross-fitted) | accuracy | right | macro-F1 | lowest recall | ECE | NLL |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in answer["candidates"].items():
        shown = f"**{name}** (chosen)" if name == chosen else name
        lines.append(
            f"| {shown} | {s['accuracy']:.1%} | {s['right']} | {s['f1']:.3f} | {s['lowest_recall']:.3f} "
            f"| {s['ece']:.3f} | {s['nll']:.3f} |"
        )
    lines += [
        "",
        "| flag when the answer's confidence is below | flagged | unflagged right | also when the models disagree: "
        "flagged | unflagged right |",
        "|---:|---:|---:|---:|---:|",
    ]
    rows = {(r["threshold"], r["on_disagreement"]): r for r in review["table"]}
    for t in README_THRESHOLDS:
        alone, both = rows[(t, False)], rows[(t, True)]
        lines.append(
            f"| {t:.0%} | {alone['flagged_share']:.1%} | {alone['unflagged_accuracy']:.2%} "
            f"| {both['flagged_share']:.1%} | {both['unflagged_accuracy']:.2%} |"
        )
    c, held = review["chosen"], review["held_out"]
    lines += [
        "",
        f"Review: below {c['threshold']:.0%}{' or the models disagree' if c['on_disagreement'] else ''}: "
        f"{c['flagged_share']:.1%} flagged, unflagged right {c['unflagged_accuracy']:.2%} "
        f"(target {'met' if c['meets_target'] else 'not met'}); chosen on the other folds instead: "
        f"{held['flagged_share']:.1%} flagged, unflagged right {held['unflagged_accuracy']:.2%}",
    ]
    return "\n".join(lines)
