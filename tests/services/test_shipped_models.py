"""The shipped models, through the app's own prediction path, on the labelled sample images.

Nothing else in the suite compares a prediction with the truth: a swapped class order, a broken
preprocessing step or a mangled export would pass everything else. The floors sit a few points under what
the shipped models score here; every class must be found.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from domain import CLASSES
from models.data.imaging import decode_image
from services.diagnosis import combined_answer, model_result, pair_rule
from services.model_files import file_sha256
from services.predictors import loaded_predictor
from settings import DEFAULT_MODEL_FILES, SAMPLE_DIR

# Accuracy floors on the 80 sample images, per model and for their one answer by the pair report's rule (the
# shipped models score 0.95, 0.975 and 0.975 there; most sample images were among their training images).
FLOORS = {"torch": 0.9, "keras": 0.93, "answer": 0.95}


@pytest.fixture(scope="module")
def answers(module_db_url: str) -> dict[str, list[str]]:
    """Each shipped model's class, and their one answer's, for every sample image; and the truth."""
    out: dict[str, list[str]] = {"truth": [], "torch": [], "keras": [], "answer": []}
    predictors = {fw: loaded_predictor(fw, str(path), file_sha256(path)) for fw, path in DEFAULT_MODEL_FILES.items()}
    pair_rule.cache_clear()
    rule = pair_rule(file_sha256(DEFAULT_MODEL_FILES["torch"]), file_sha256(DEFAULT_MODEL_FILES["keras"]))
    assert rule is not None, "the shipped pair report gives the shipped models no rule"
    for label in CLASSES:
        for path in sorted((SAMPLE_DIR / label).iterdir()):
            data = Path(path).read_bytes()
            decoded = decode_image(data, path.name, max_bytes=len(data) + 1, max_pixels=10**8)
            results = [
                model_result(framework=fw, model_version_id=0, probabilities=p.predict([decoded.rgb])[0])
                for fw, p in predictors.items()
            ]
            out["truth"].append(label)
            for r in results:
                out[r["framework"]].append(r["label"])
            out["answer"].append(combined_answer(results, rule).label)  # type: ignore[union-attr]
    return out


@pytest.mark.parametrize("which", list(FLOORS))
def test_the_shipped_models_find_each_class_of_the_sample_images(answers, which: str) -> None:
    truth, predicted = np.array(answers["truth"]), np.array(answers[which])
    accuracy = float((truth == predicted).mean())
    recalled = {label for label in CLASSES if ((truth == label) & (predicted == label)).any()}
    assert recalled == set(CLASSES)
    assert accuracy >= FLOORS[which], f"{which}: {accuracy:.3f} on the sample images"


# The validation figures (duplicate-free split carved from Training, seed 42) the shipped models must reach:
# accuracy, macro-F1 and the lowest per-class recall; "answer" is their one answer by the pair report's rule,
# cross-fitted. models/weights/pair.json holds what they score (python -m models pair-report); a target not
# reached yet is marked so, strictly: reaching it fails the mark, which must then go.
TARGETS = {"cnn": (0.95, 0.94, 0.90), "mobilenet": (0.93, 0.92, 0.88), "answer": (0.96, 0.95, 0.92)}
NOT_YET = {"cnn"}
# No shipped model may score below these, the figures of the models shipped now: a weaker checkpoint cannot
# replace them without this test saying so.
SHIPPED = {"cnn": 0.925, "mobilenet": 0.96, "answer": 0.97}
PAIR_RECORD = DEFAULT_MODEL_FILES["torch"].parent / "pair.json"


def _pair() -> dict:
    return json.loads(PAIR_RECORD.read_text())


def _figures(which: str) -> dict:
    pair = _pair()
    return pair["answer"]["cross_fitted"] if which == "answer" else pair[which]


def test_the_pair_record_describes_the_shipped_files() -> None:
    models = _pair()["models"]
    assert models["cnn"]["sha256"] == file_sha256(DEFAULT_MODEL_FILES["torch"])
    assert models["mobilenet"]["sha256"] == file_sha256(DEFAULT_MODEL_FILES["keras"])


@pytest.mark.parametrize("which", ["cnn", "mobilenet"])
def test_the_pair_record_scores_each_model_as_its_own_validation_predictions_do(which: str) -> None:
    """The pair report rebuilt the split and predicted it again: each model's figures there are those recorded
    beside the model file when it was made."""
    path = DEFAULT_MODEL_FILES["torch" if which == "cnn" else "keras"]
    kept = json.loads(Path(f"{path}.val_predictions.json").read_text())
    assert kept["model_sha256"] == _pair()["models"][which]["sha256"]
    right = sum(image["label"] == image["predicted"] for image in kept["images"])
    assert len(kept["images"]) == _pair()["images"]
    assert _figures(which)["accuracy"] == pytest.approx(right / len(kept["images"]))


def test_the_pair_answer_is_at_least_as_accurate_as_the_better_model() -> None:
    answer = _pair()["answer"]
    candidates = answer["candidates"]
    assert answer["cross_fitted"]["right"] >= max(candidates["cnn"]["right"], candidates["mobilenet"]["right"])
    assert answer["cross_fitted"] == candidates[answer["rule"]["name"]]


def test_the_review_rule_keeps_its_promise_on_validation() -> None:
    review = _pair()["review"]
    chosen, target = review["chosen"], review["target"]
    assert chosen["unflagged_accuracy"] >= target["unflagged_accuracy"] == 0.995
    assert chosen["flagged_share"] <= target["flagged_share"] == 0.15
    assert chosen["meets_target"]


@pytest.mark.parametrize("which", list(SHIPPED))
def test_the_shipped_models_score_at_least_what_they_scored_when_shipped(which: str) -> None:
    assert _figures(which)["accuracy"] >= SHIPPED[which]


@pytest.mark.parametrize(
    "which",
    [
        pytest.param(w, marks=pytest.mark.xfail(strict=True, reason="target not reached yet: see the README"))
        if w in NOT_YET
        else w
        for w in TARGETS
    ],
)
def test_the_shipped_models_reach_their_targets_on_validation(which: str) -> None:
    figures = _figures(which)
    accuracy, f1, lowest_recall = TARGETS[which]
    assert figures["accuracy"] >= accuracy and figures["f1"] >= f1 and figures["lowest_recall"] >= lowest_recall
