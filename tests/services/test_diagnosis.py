"""The review rule, the averaged answer and saving a scan with its answers: one home, used by the Diagnose page
and the batch job."""

import math
from pathlib import Path

import pytest
from sqlalchemy import select

from db.jobs import create_job
from db.runs import register_model_version
from db.schema import Prediction, Scan
from db.session import session_scope
from models.data.imaging import decode_image
from services.diagnosis import Review, averaged_result, model_result, review, save_scan_with_predictions


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
