"""The pair report's review table and chosen threshold, on probabilities with known answers."""

import numpy as np
import pytest

from models.evaluation.pair_report import pair_report, review_table


def test_review_table_counts_flags_and_the_accuracy_of_the_rest() -> None:
    y = np.array([0, 1, 2, 3])
    cnn = np.array([[0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0.6, 0, 0.4, 0], [0, 0, 0.2, 0.8]])
    mnv = np.array([[0.8, 0.2, 0, 0], [0.3, 0.7, 0, 0], [0.9, 0, 0.1, 0], [0, 0, 0.1, 0.9]])
    rows = {row["threshold"]: row for row in review_table(y, cnn, mnv)}
    # At 0.5 only image 2 (both wrong, agreeing on glioma) is unflagged-and-wrong: 3 of 4 right.
    assert rows[0.5]["flagged_share"] == 0.0 and rows[0.5]["unflagged_accuracy"] == pytest.approx(0.75)
    # At 0.7 image 2's CNN (0.6) is unsure: flagged; the other three are right.
    assert rows[0.7]["flagged_share"] == pytest.approx(0.25) and rows[0.7]["unflagged_accuracy"] == 1.0


class Fixed:
    """A predictor that answers with given probabilities, image by image."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs, self.seen = probs, 0

    def predict(self, images: list) -> np.ndarray:
        out = self.probs[self.seen : self.seen + len(images)]
        self.seen += len(images)
        return out


def test_pair_report_chooses_the_lowest_threshold_whose_unflagged_images_are_right() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    sure = np.eye(4)[y] * 0.9 + 0.025
    unsure_wrong = np.eye(4)[(y + 1) % 4] * 0.4 + 0.15
    cnn = np.where((np.arange(200) % 10 == 0)[:, None], unsure_wrong, sure)
    report = pair_report(Fixed(cnn), Fixed(sure.copy()), [None] * 200, y)
    assert report["cnn"]["accuracy"] == pytest.approx(0.9) and report["mobilenet"]["accuracy"] == 1.0
    assert report["review_threshold"]["threshold"] == 0.5  # disagreement already flags every wrong answer
    assert report["review_threshold"]["flagged_share"] == pytest.approx(0.1)
    assert report["averaged"]["accuracy"] == 1.0 and "ece_after" in report["averaged"]["calibration"]
