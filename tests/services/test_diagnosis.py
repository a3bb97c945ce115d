"""The review rule and the averaged answer: one home, used by the Diagnose page and the batch job."""

import math

import pytest

from services.diagnosis import averaged_result, model_result, review


def result(framework: str, probabilities: list[float]):  # type: ignore[no-untyped-def]
    return model_result(framework=framework, model_version_id=1, probabilities=probabilities)


SURE_GLIOMA = [0.9, 0.05, 0.03, 0.02]
SURE_MENINGIOMA = [0.05, 0.9, 0.03, 0.02]


def test_two_sure_models_that_agree_are_not_flagged() -> None:
    assert review([result("torch", SURE_GLIOMA), result("keras", SURE_GLIOMA)], 0.7).flagged is False


def test_disagreement_and_low_confidence_are_flagged_with_their_reasons() -> None:
    verdict = review([result("torch", SURE_GLIOMA), result("keras", SURE_MENINGIOMA)], 0.7)
    assert verdict.flagged and verdict.reasons == ["the models disagree"]
    verdict = review([result("torch", SURE_GLIOMA)], 0.95)
    assert verdict.reasons == ["Custom CNN (PyTorch) is 90% confident, below 95%"]
    assert review([], 0.5).flagged


def test_a_model_exactly_as_confident_as_the_threshold_is_not_flagged_and_one_just_below_is() -> None:
    # The rule flags a model *less* confident than the threshold: at the threshold, or above, is enough.
    just_below, just_above = math.nextafter(0.7, 0.0), math.nextafter(0.7, 1.0)
    for confidence, flagged in ((just_below, True), (0.7, False), (just_above, False)):
        rest = (1 - confidence) / 3
        answer = result("torch", [confidence, rest, rest, rest])
        assert answer["confidence"] == confidence
        verdict = review([answer, result("keras", SURE_GLIOMA)], 0.7)
        assert verdict.flagged is flagged
        assert verdict.reasons == (["Custom CNN (PyTorch) is 70% confident, below 70%"] if flagged else [])


def test_averaged_probabilities_pick_the_class_the_models_favour_together() -> None:
    glioma_barely = result("torch", [0.55, 0.40, 0.03, 0.02])
    meningioma = result("keras", [0.05, 0.50, 0.40, 0.05])
    label, mean = averaged_result([glioma_barely, meningioma])
    assert (label, mean) == ("meningioma", pytest.approx(0.45))
    assert averaged_result([glioma_barely]) == ("glioma", pytest.approx(0.55))


def test_a_probability_vector_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 4 probabilities"):
        result("torch", [0.5, 0.5])


def test_the_pair_temperature_applies_only_to_the_models_it_was_fitted_for(db_url, tmp_path) -> None:
    import json

    from services.diagnosis import pair_temperature

    report = tmp_path / "pair.json"
    report.write_text(
        json.dumps(
            {
                "models": {"cnn": {"sha256": "c" * 64}, "mobilenet": {"sha256": "m" * 64}},
                "averaged": {"calibration": {"temperature": 0.5}},
            }
        )
    )
    assert pair_temperature("c" * 64, "m" * 64, report) == 0.5
    assert pair_temperature("c" * 64, "x" * 64, report) == 1.0
    assert pair_temperature("c" * 64, "m" * 64, tmp_path / "missing.json") == 1.0
    glioma_barely = result("torch", [0.55, 0.40, 0.03, 0.02])
    meningioma = result("keras", [0.05, 0.50, 0.40, 0.05])
    label, sharpened = averaged_result([glioma_barely, meningioma], temperature=0.5)
    # T < 1 sharpens: the same class, more confident (0.45² / (0.3² + 0.45² + 0.215² + 0.035²)).
    assert label == "meningioma" and sharpened == pytest.approx(0.45**2 / (0.3**2 + 0.45**2 + 0.215**2 + 0.035**2))
