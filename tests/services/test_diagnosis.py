"""The review rule and the models' one answer: one home, used by the Diagnose page, the batch job, History and
the reports."""

import math
from pathlib import Path

import pytest
from sqlalchemy import select

from db.jobs import create_job
from db.runs import register_model_version
from db.schema import Prediction, Scan
from db.session import session_scope
from models.data.imaging import decode_image
from models.inference.combination import Combination
from services.diagnosis import PairRule, Review, combined_answer, model_result, review, save_scan_with_predictions


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
    assert review([], 0.5) == Review(True, ["no model gave an answer"])


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


def test_without_a_pair_report_the_combined_answer_is_the_plain_average() -> None:
    glioma_barely = result("torch", [0.55, 0.40, 0.03, 0.02])
    meningioma = result("keras", [0.05, 0.50, 0.40, 0.05])
    answer = combined_answer([glioma_barely, meningioma], None)
    assert (answer.label, answer.confidence) == ("meningioma", pytest.approx(0.45))
    assert "no pair report applies" in answer.how
    alone = combined_answer([glioma_barely], None)
    assert (alone.label, alone.confidence, alone.how) == ("glioma", 0.55, "Custom CNN (PyTorch) alone")
    assert combined_answer([], None) is None


MOBILENET_ALONE = PairRule(Combination("mobilenet"), threshold=0.9, on_disagreement=True)


def test_a_rule_that_is_one_model_gives_that_models_answer_and_says_so() -> None:
    sure_cnn = result("torch", SURE_GLIOMA)
    unsure_mobilenet = result("keras", [0.1, 0.8, 0.05, 0.05])
    answer = combined_answer([sure_cnn, unsure_mobilenet], MOBILENET_ALONE)
    assert (answer.label, answer.confidence) == ("meningioma", pytest.approx(0.8))
    assert answer.how == "the answer is MobileNetV2's: combining did not beat it on validation"


def test_with_a_pair_rule_the_combined_answers_confidence_and_disagreement_flag() -> None:
    sure, unsure = result("keras", SURE_GLIOMA), result("keras", [0.85, 0.1, 0.03, 0.02])
    assert review([result("torch", SURE_GLIOMA), sure], 0.7, MOBILENET_ALONE).flagged is False
    # The CNN's own confidence no longer counts: only the combined answer's.
    assert review([result("torch", [0.4, 0.3, 0.2, 0.1]), sure], 0.7, MOBILENET_ALONE).flagged is False
    verdict = review([result("torch", SURE_GLIOMA), unsure], 0.7, MOBILENET_ALONE)
    assert verdict.reasons == ["the combined answer is 85.0% confident, below 90%"]
    verdict = review([result("torch", SURE_MENINGIOMA), sure], 0.7, MOBILENET_ALONE)
    assert verdict.reasons == ["the models disagree"]
    quiet = PairRule(Combination("mobilenet"), threshold=0.9, on_disagreement=False)
    assert review([result("torch", SURE_MENINGIOMA), sure], 0.7, quiet).flagged is False
    # One model alone: the settings' threshold, as without a pair report.
    assert review([unsure], 0.9, MOBILENET_ALONE).reasons == ["MobileNetV2 (Keras) is 85% confident, below 90%"]


def test_a_probability_vector_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 4 probabilities"):
        result("torch", [0.5, 0.5])


def pair_record(rule: dict, threshold: float = 0.9) -> dict:
    return {
        "models": {"cnn": {"sha256": "c" * 64}, "mobilenet": {"sha256": "m" * 64}},
        "answer": {"rule": rule},
        "review": {"chosen": {"threshold": threshold, "on_disagreement": False}},
    }


def test_the_pair_rule_applies_only_to_the_models_it_was_chosen_for(db_url, tmp_path) -> None:
    import json

    from services.diagnosis import pair_rule

    report = tmp_path / "pair.json"
    report.write_text(json.dumps(pair_record({"name": "average", "temperature": 0.5})))
    pair_rule.cache_clear()
    rule = pair_rule("c" * 64, "m" * 64, report)
    assert rule == PairRule(Combination("average", {}, 0.5), threshold=0.9, on_disagreement=False)
    assert pair_rule("c" * 64, "x" * 64, report) is None
    assert pair_rule("c" * 64, "m" * 64, tmp_path / "missing.json") is None
    glioma_barely = result("torch", [0.55, 0.40, 0.03, 0.02])
    meningioma = result("keras", [0.05, 0.50, 0.40, 0.05])
    answer = combined_answer([glioma_barely, meningioma], rule)
    # T < 1 sharpens: the same class, more confident (0.45² / (0.3² + 0.45² + 0.215² + 0.035²)).
    assert answer.label == "meningioma"
    assert answer.confidence == pytest.approx(0.45**2 / (0.3**2 + 0.45**2 + 0.215**2 + 0.035**2))
    report.write_text(json.dumps(pair_record({"name": "weighted", "params": {}})))  # no weight: no rule
    pair_rule.cache_clear()
    assert pair_rule("c" * 64, "m" * 64, report) is None


def test_a_scan_and_each_models_answer_are_saved_once_with_the_files_own_details(db_url, dicom_bytes) -> None:
    data = dicom_bytes()
    decoded = decode_image(data, "series.dcm", max_bytes=2**24, max_pixels=10**7)
    with session_scope() as session:
        torch_id, keras_id = (
            register_model_version(
                session=session, framework=fw, name=fw, artifact_path=f"/nowhere/{fw}", sha256=fw[0] * 64
            ).id
            for fw in ("torch", "keras")
        )
        job_id = create_job(session=session, kind="batch", params={}).id
    answers = [
        model_result(framework="torch", model_version_id=torch_id, probabilities=SURE_GLIOMA),
        model_result(framework="keras", model_version_id=keras_id, probabilities=SURE_MENINGIOMA),
    ]

    def saved_now() -> tuple[bool, int, bool, list[int]]:
        with session_scope() as session:
            saved = save_scan_with_predictions(
                session=session,
                decoded=decoded,
                patient_mrn="P-0042",
                source="batch",
                results=answers,
                threshold=0.7,
                original_name="x" * 600,
                job_id=job_id,
            )
            predictions = [p.id for p in saved.predictions]
            return saved.scan_created, saved.predictions_created, saved.flagged, predictions

    first, again = saved_now(), saved_now()
    assert first[:3] == (True, 2, True) and again[:3] == (False, 0, True) and first[3] == again[3]
    with session_scope() as session:
        [scan] = session.scalars(select(Scan)).all()
        stored = [
            (p.model_version_id, p.label, p.probabilities, p.confidence, p.needs_review, p.source, p.job_id)
            for p in session.scalars(select(Prediction).order_by(Prediction.id))
        ]
        assert (scan.patient.mrn, scan.source, scan.job_id, scan.original_name) == (
            "P-0042",
            "batch",
            job_id,
            "x" * 512,
        )
        assert (scan.modality, scan.study_date, scan.series_description, scan.note) == (
            decoded.modality,
            decoded.study_date,
            decoded.series_description,
            decoded.note,
        )
        assert (scan.modality, scan.study_date) == ("MR", "2024-01-31")
        assert Path(scan.file_path).read_bytes() == decoded.stored_bytes
        assert Path(scan.file_path).suffix == decoded.stored_suffix
    assert stored == [
        (torch_id, "glioma", answers[0]["probabilities"], 0.9, True, "batch", job_id),
        (keras_id, "meningioma", answers[1]["probabilities"], 0.9, True, "batch", job_id),
    ]


def test_a_series_slices_are_answered_as_one_scan_would_be() -> None:
    import json

    import numpy as np

    from services.model_files import PAIR_REPORT

    rule = PairRule.of(json.loads(PAIR_REPORT.read_text()))
    cnn = np.array([SURE_GLIOMA, [0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.7, 0.1]])
    mobilenet = np.array([[0.85, 0.1, 0.03, 0.02], SURE_MENINGIOMA, [0.05, 0.05, 0.1, 0.8]])
    rows = rule.slice_answers({"torch": cnn, "keras": mobilenet})
    for i in range(3):
        one = combined_answer([result("torch", list(cnn[i])), result("keras", list(mobilenet[i]))], rule)
        assert one is not None
        assert list(rows[i]) == pytest.approx([one.probabilities[c] for c in one.probabilities])
