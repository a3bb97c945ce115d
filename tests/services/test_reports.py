"""Exports stay text: CSV cells a spreadsheet would run, and report fields a browser would render."""

import csv
import io
from datetime import datetime

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
