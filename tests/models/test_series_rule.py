"""The series rule: what a series is called from its slices' probabilities, and when it is flagged."""

import json

import numpy as np
import pytest

from domain import CLASSES
from models.inference.series_rule import RULE_FILE, SeriesRule, series_answer

RULE = SeriesRule(k=1, min_tumor=0.6, min_slices=3)


def probs(*rows: dict[str, float]) -> np.ndarray:
    """Slices' probabilities from {class: p} (the rest spread over the other classes)."""
    out = []
    for row in rows:
        rest = (1 - sum(row.values())) / (len(CLASSES) - len(row))
        out.append([row.get(c, rest) for c in CLASSES])
    return np.array(out)


def answer(rows: np.ndarray, other: np.ndarray | None = None, *, accepted=None, flagged=None, threshold=None):  # type: ignore[no-untyped-def]
    n = len(rows)
    return series_answer(
        {"torch": rows, "keras": rows if other is None else other},
        accepted=accepted or [True] * n,
        slice_flagged=flagged or [False] * n,
        rule=RULE,
        threshold=threshold,
    )


def test_a_tumor_on_one_slice_of_many_makes_the_series_that_tumor() -> None:
    rows = probs(*[{"notumor": 0.97}] * 19, {"glioma": 0.9})
    got = answer(rows)
    assert got is not None and got.label == "glioma" and got.confidence == pytest.approx(0.9)
    assert got.deciding == [19] and got.ranking[0] == 19 and not got.flagged


def test_no_tumor_only_when_no_slice_shows_one_with_confidence() -> None:
    doubtful = probs(*[{"notumor": 0.97}] * 10, {"meningioma": 0.55, "notumor": 0.4})
    got = answer(doubtful)
    assert got is not None and got.label == "notumor"
    assert got.probabilities["meningioma"] == pytest.approx(0.55)


def test_slices_refused_by_the_brain_mri_check_do_not_count() -> None:
    rows = probs({"pituitary": 0.99}, *[{"notumor": 0.95}] * 4)
    got = answer(rows, accepted=[False, True, True, True, True])
    assert got is not None and got.label == "notumor" and (got.accepted, got.refused) == (4, 1)
    assert 0 not in got.ranking


def test_the_flag_names_each_reason() -> None:
    cnn = probs({"glioma": 0.9}, {"notumor": 0.9})
    mobilenet = probs({"meningioma": 0.9}, {"notumor": 0.9})
    got = answer(cnn, mobilenet, flagged=[True, False], threshold=0.95)
    assert got is not None and got.flagged
    text = " | ".join(got.reasons)
    assert "fewer than 3" in text and "deciding slices are flagged" in text
    assert "models disagree" in text and "below 95%" in text
    assert got.per_model == {"torch": "glioma", "keras": "meningioma"}


def test_nothing_to_answer_from_when_no_slice_is_accepted() -> None:
    assert answer(probs({"glioma": 0.9}), accepted=[False]) is None


def test_the_shipped_rule_is_the_one_chosen_on_validation() -> None:
    chosen = json.loads(RULE_FILE.read_text())
    assert SeriesRule.load() == SeriesRule(**chosen["rule"])
    held_out = chosen["held_out"]
    # What the README states of it, on pseudo-series none of which were used to choose it.
    assert held_out["chosen"]["balanced_accuracy"] > max(
        v["balanced_accuracy"] for k, v in held_out.items() if k != "chosen"
    )


def test_a_missing_rule_file_falls_back_to_the_defaults(tmp_path) -> None:
    assert SeriesRule.load(tmp_path / "missing.json") == SeriesRule()


def test_each_slice_is_answered_by_the_models_pair_rule_where_one_is_given() -> None:
    cnn = probs(*[{"notumor": 0.9}] * 4, {"notumor": 0.7})
    mobilenet = probs(*[{"notumor": 0.9}] * 4, {"pituitary": 0.95})
    # Averaged, the last slice is 0.5 pituitary: below the rule's 0.6, so no tumor.
    assert answer(cnn, mobilenet).label == "notumor"
    trusting_mobilenet = series_answer(
        {"torch": cnn, "keras": mobilenet},
        accepted=[True] * 5,
        slice_flagged=[False] * 5,
        rule=RULE,
        combine=lambda per_model: per_model["keras"],
    )
    assert trusting_mobilenet is not None and trusting_mobilenet.label == "pituitary"
    assert trusting_mobilenet.confidence == pytest.approx(0.95) and trusting_mobilenet.deciding == [4]
    # What each model says alone is still its own.
    assert trusting_mobilenet.per_model == {"torch": "notumor", "keras": "pituitary"}
