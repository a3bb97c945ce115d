"""Temperature scaling and the calibration figures."""

import numpy as np
import pytest

from models.inference.calibration import (
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    nll,
)


def test_ece_matches_a_hand_computed_example() -> None:
    probs = np.array(
        [
            [0.95, 0.05],
            [0.95, 0.05],  # bin (14/15, 1]: confidence 0.95, 1 of 2 right -> |0.5 - 0.95| = 0.45
            [0.6, 0.4],
            [0.4, 0.6],  # bin (8/15, 9/15]: confidence 0.6, 2 of 2 right -> |1 - 0.6| = 0.4
        ]
    )
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.4)


def test_temperature_lowers_the_nll_of_an_over_confident_model() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 2000)
    # Right 70 % of the time but always 99 % sure.
    predicted = np.where(rng.random(2000) < 0.7, labels, (labels + 1) % 4)
    probs = np.full((2000, 4), 0.01 / 3)
    probs[np.arange(2000), predicted] = 0.99
    t = fit_temperature(probs, labels)
    assert t > 1.5
    calibrated = apply_temperature(probs, t)
    assert nll(calibrated, labels) < nll(probs, labels) - 0.5
    assert (calibrated.argmax(1) == probs.argmax(1)).all()
    assert calibrated.max(1).mean() == pytest.approx(0.7, abs=0.02)
    report = calibration_report(probs, labels)
    assert report["ece_after"] < 0.03 < report["ece_before"]
    assert report["nll_after"] < report["nll_before"]


def test_temperature_one_changes_nothing() -> None:
    probs = np.array([[0.7, 0.2, 0.1]])
    assert np.allclose(apply_temperature(probs, 1.0), probs)
    assert np.allclose(apply_temperature(probs, 2.0).sum(), 1.0)
