"""Exports stay text: CSV cells a spreadsheet would run, and report fields a browser would render."""

import csv
import io
from dataclasses import replace
from datetime import datetime

import pytest

from db.history import PatientTimeline, PredictionRow
from db.reads import ReadRow
from services.reports import csv_cell, patient_report_html, predictions_csv
from tests.entries import scan_entry

HOSTILE = "**x**<img src=x onerror=alert(1)>"


def test_cells_that_a_spreadsheet_would_run_become_text() -> None:
    for value in ("=1+1", "+1", "-1", "@SUM(A1)", "  =HYPERLINK(1)", "\t=1", "\r@x", "\x01x"):
        assert csv_cell(value) == "'" + value, value
    for value in ("glioma", "P-001", "", 0.5, " leading space"):
        assert csv_cell(value) == value


def _timeline(text: str) -> PatientTimeline:
    prediction = PredictionRow(
        prediction_id=1,
        created_at=datetime(2026, 1, 2),
        patient_pk=1,
        patient_mrn=text,
        scan_id=1,
        original_name=text,
        file_path="/missing.png",
        source="upload",
        job_id=None,
        model_version_id=1,
        model_name=text,
        framework="torch",
        artifact_path="/m.pth",
        model_sha256="0" * 64,
        label="glioma",
        confidence=0.9,
        probabilities={"glioma": 0.9, "meningioma": 0.1},
        needs_review=False,
        read_label="meningioma",
        read_by=text,
        read_at=datetime(2026, 1, 3),
        read_note=text,
    )
    reading = ReadRow(
        read_id=1,
        scan_id=1,
        label="meningioma",
        note=text,
        read_by=text,
        read_at=datetime(2026, 1, 3),
        migrated=False,
    )
    scan = scan_entry(original_name=text, series_description=text, predictions=[prediction], reads=[reading])
    return PatientTimeline(patient_pk=1, mrn=text, created_at=datetime(2026, 1, 1), scans=[scan])


def test_the_report_shows_typed_and_carried_text_as_text() -> None:
    html = patient_report_html(timeline=_timeline(HOSTILE))
    assert "<img src=x" not in html
    assert "**x**&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<strong>Read: Meningioma</strong> by **x**&lt;img" in html


def test_the_predictions_csv_keeps_the_text_and_neutralises_formulas() -> None:
    rows = _timeline("=cmd|x").scans[0].predictions
    [row] = list(csv.DictReader(io.StringIO(predictions_csv(rows=rows).decode())))
    assert row["patient_id"] == "'=cmd|x" and row["read_note"] == "'=cmd|x" and row["read_by"] == "'=cmd|x"


def _two_models(cnn: dict[str, float], mobilenet: dict[str, float]) -> list[PredictionRow]:
    [cnn_row] = _timeline("P-1").scans[0].predictions
    cnn_row = replace(cnn_row, probabilities=cnn, label=max(cnn, key=cnn.__getitem__), confidence=max(cnn.values()))
    mobilenet_row = replace(
        cnn_row,
        prediction_id=2,
        model_version_id=2,
        framework="keras",
        probabilities=mobilenet,
        label=max(mobilenet, key=mobilenet.__getitem__),
        confidence=max(mobilenet.values()),
    )
    return [cnn_row, mobilenet_row]


GLIOMA_BARELY = {"glioma": 0.55, "meningioma": 0.40, "notumor": 0.03, "pituitary": 0.02}
MENINGIOMA = {"glioma": 0.05, "meningioma": 0.50, "notumor": 0.40, "pituitary": 0.05}


def test_the_report_and_history_give_the_models_one_answer_by_their_pair_rule(db_url) -> None:
    from models.inference.combination import Combination
    from services.diagnosis import PairRule
    from services.reports import scan_answer

    scan = scan_entry(predictions=_two_models(GLIOMA_BARELY, MENINGIOMA))
    # Versions with no pair report: the plain average.
    assert (scan_answer(scan).label, scan_answer(scan).confidence) == ("meningioma", pytest.approx(0.45))
    html = patient_report_html(timeline=replace(_timeline("P-1"), scans=[scan]))
    assert "<td>Combined answer<div" in html and "<td>meningioma</td>\n<td>45.0%</td>" in html
    cnn_alone = PairRule(Combination("cnn"), threshold=0.9, on_disagreement=True)
    answer = scan_answer(scan, lambda results: cnn_alone)
    assert answer.label == "glioma" and answer.how == "the answer is the CNN's: combining did not beat it on validation"
    assert scan_answer(scan_entry(predictions=scan.predictions[:1])) is None  # one model: its own answer is shown


def test_a_batch_of_two_models_has_their_one_answer_in_its_csv(db_url) -> None:
    from db.batches import BatchRow
    from services.reports import batch_csv

    results = {
        "torch": {"label": "glioma", "confidence": 0.55, "probabilities": GLIOMA_BARELY, "model_version_id": 1},
        "keras": {"label": "meningioma", "confidence": 0.5, "probabilities": MENINGIOMA, "model_version_id": 2},
    }
    row = BatchRow("a.jpg", "done", None, "meningioma", 1, True, None, results)
    [line] = list(
        csv.DictReader(io.StringIO(batch_csv(rows=[row], frameworks=["torch", "keras"], threshold=0.7).decode()))
    )
    assert (line["answer_class"], line["answer_confidence"]) == ("meningioma", "0.4500")
    assert line["torch_class"] == "glioma" and line["keras_class"] == "meningioma"
    assert line["why"] == (
        "Custom CNN (PyTorch) is 55% confident, below 70%; MobileNetV2 (Keras) is 50% confident, below 70%; "
        "the models disagree"
    )
    single = batch_csv(rows=[replace(row, results={"torch": results["torch"]})], frameworks=["torch"], threshold=0.7)
    assert "answer_class" not in single.decode().splitlines()[0]
