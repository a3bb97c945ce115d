"""The DICOM objects a series' results go back as: every one passes dicom3tools' dciodvfy without errors and
says what the answer says."""

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage, generate_uid

from domain import CLASSES, DISCLAIMER
from scripts.dicom_peers import DCIODVFY, dciodvfy_errors
from services.dicom_results import (
    Instance,
    ModelInfo,
    Read,
    StudyRef,
    capture_pixels,
    heatmap_capture,
    series_report,
)
from tests.skip import require_tools

REF = StudyRef(
    study_uid=generate_uid(),
    series_uid=generate_uid(),
    patient_id="HOSP 123/456",
    study_date="2024-01-31",
    instances=[Instance(MRImageStorage, generate_uid(), 1, False) for _ in range(3)]
    + [Instance(EnhancedMRImageStorage, "1.2.826.0.1.3680043.8.498.1", f, True) for f in (1, 2)],
)
ANSWER = {
    "label": "glioma",
    "confidence": 0.91,
    "probabilities": {"glioma": 0.91, "meningioma": 0.05, "notumor": 0.03, "pituitary": 0.01},
    "flagged": True,
    "reasons": ["the models disagree on the series (Custom CNN Glioma, MobileNetV2 Meningioma)"],
    "accepted": 5,
    "refused": 0,
    "rule": "the most suspicious accepted slice decides",
    "per_model": {"torch": "glioma", "keras": "meningioma"},
    "deciding_instances": [[REF.instances[0].sop_instance_uid, 1], ["1.2.826.0.1.3680043.8.498.1", 2]],
}
MODELS = [
    ModelInfo("torch", 1, "cnn_default.pth", "a" * 64),
    ModelInfo("keras", 2, "mobilenetv2_default.keras", "b" * 64),
]


@pytest.fixture(autouse=True)
def _dciodvfy() -> None:
    require_tools(DCIODVFY)


def saved(ds, path: Path) -> Path:  # type: ignore[no-untyped-def]
    ds.save_as(path, enforce_file_format=True)
    return path


def items(ds) -> list:  # type: ignore[no-untyped-def]
    out = []
    for item in ds.get("ContentSequence", []):
        out += [item, *items(item)]
    return out


@pytest.mark.slow
def test_the_report_holds_the_answer_and_passes_dciodvfy(tmp_path: Path) -> None:
    sr = series_report(REF, ANSWER, MODELS, report_series_uid=generate_uid(), instance_number=1)
    assert dciodvfy_errors(saved(sr, tmp_path / "sr.dcm")) == []
    assert (sr.StudyInstanceUID, sr.PatientID, sr.StudyDate) == (REF.study_uid, "HOSP 123/456", "20240131")
    assert "PatientName" in sr and not sr.PatientName and not sr.PatientBirthDate  # present (Type 2), empty
    content = items(sr)
    numbers = {
        i.ConceptNameCodeSequence[0].CodeValue: float(i.MeasuredValueSequence[0].NumericValue)
        for i in content
        if i.ValueType == "NUM"
    }
    assert {c: numbers[f"p-{c}"] for c in CLASSES} == ANSWER["probabilities"]
    texts = [i.TextValue for i in content if i.ValueType == "TEXT"]
    assert DISCLAIMER in texts and "a" * 64 in texts and ANSWER["reasons"][0] in texts
    images = [i for i in content if i.ValueType == "IMAGE"]
    assert len(images) == 2 and images[1].ReferencedSOPSequence[0].ReferencedFrameNumber == 2
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert len(evidence) == 4  # every instance of the series, a multi-frame one once


def test_the_amended_report_adds_the_read_and_names_its_predecessor(tmp_path: Path) -> None:
    first = series_report(REF, ANSWER, MODELS, report_series_uid=generate_uid(), instance_number=1)
    amended = series_report(
        REF,
        ANSWER,
        MODELS,
        report_series_uid=first.SeriesInstanceUID,
        instance_number=2,
        previous=[(first.SeriesInstanceUID, first.SOPInstanceUID)],
        read=Read("meningioma", "dr-lee", datetime(2026, 12, 6, 10, 30), "enhancing dural tail"),
    )
    assert dciodvfy_errors(saved(amended, tmp_path / "amended.dcm")) == []
    predecessor = amended.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.SOPInstanceUID
    read = next(i for i in items(amended) if i.ConceptNameCodeSequence[0].CodeValue == "clinician-read")
    inner = items(read)
    assert inner[0].ConceptCodeSequence[0].CodeValue == "meningioma"
    assert str(inner[1].PersonName) == "dr-lee^" and str(inner[2].DateTime) == "20261206103000"


def test_a_heatmap_capture_is_derived_not_for_diagnosis_and_passes_dciodvfy(tmp_path: Path) -> None:
    rgb = np.zeros((200, 180, 3), np.uint8)
    rgb[60:120, 50:110] = 180
    pixels = capture_pixels(rgb, [("CNN", rgb), ("MobileNetV2", rgb)], "slice 2 of 5, glioma")
    sc = heatmap_capture(REF, REF.instances[4], pixels, capture_series_uid=generate_uid(), instance_number=1)
    assert dciodvfy_errors(saved(sc, tmp_path / "sc.dcm")) == []
    assert list(sc.ImageType) == ["DERIVED", "SECONDARY"] and sc.BurnedInAnnotation == "YES"
    assert "not for diagnosis" in sc.SeriesDescription.lower() and "not for diagnosis" in sc.ImageComments
    assert sc.SourceImageSequence[0].ReferencedFrameNumber == 2
    assert sc.pixel_array.shape == pixels.shape and (sc.pixel_array[:40] > 0).any()  # the banner is drawn
