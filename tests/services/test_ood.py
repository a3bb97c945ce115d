"""The shipped CNN's out-of-distribution check, through the app's own path: pictures that are not brain MRI
slices are flagged, the sample MRI slices pass, a score just above the threshold is flagged and one just below
passes, and a batch records a flagged file as skipped with the reason, keeping its scan (without an answer) for a
clinician."""

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from db.batches import batch_rows
from db.jobs import create_job
from db.runs import register_model_version
from db.schema import Prediction, Scan
from db.session import session_scope
from domain import CLASSES
from models.data.imaging import decode_image
from models.evaluation.ood import OodStats, report_path, stats_path
from models.evaluation.ood_probes import blank, noise, text_screens
from services.batch_input import list_folder
from services.model_files import file_sha256
from services.ood import OodGate, OodVerdict, gate_for, ood_gate
from settings import DEFAULT_MODEL_FILES, SAMPLE_DIR

CNN = DEFAULT_MODEL_FILES["torch"]


@pytest.fixture
def gate(db_url: str) -> OodGate:
    return ood_gate(str(CNN), file_sha256(CNN))


def decoded(path: Path) -> np.ndarray:
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's test files are odd on purpose, and say so
        return decode_image(data, path.name, max_bytes=len(data) + 1, max_pixels=10**8).rgb


NOT_MRI = {
    "all black": lambda: [np.zeros((224, 224, 3), np.uint8)],
    "blank": lambda: [rgb for _, rgb in blank(np.random.default_rng(11), 6)],
    "noise": lambda: [rgb for _, rgb in noise(np.random.default_rng(12), 5)],
    "text screenshot": lambda: [rgb for _, rgb in text_screens(np.random.default_rng(13), 4)],
    "CT DICOM (pydicom)": lambda: [decoded(Path(get_testdata_file("CT_small.dcm")))],
    "ultrasound DICOM (pydicom)": lambda: [decoded(Path(get_testdata_file("examples_rgb_color.dcm")))],
}


@pytest.mark.parametrize("kind", list(NOT_MRI))
def test_the_shipped_check_flags_pictures_that_are_not_brain_mri_slices(gate: OodGate, kind: str) -> None:
    verdicts = gate.check(NOT_MRI[kind]())
    assert all(v.flagged for v in verdicts), [v.explanation for v in verdicts]
    assert verdicts[0].reason.startswith("not a brain MRI slice: it scores ")


def test_the_shipped_check_passes_the_sample_mri_slices(gate: OodGate) -> None:
    paths = sorted(SAMPLE_DIR.glob("*/*.jpg"))
    verdicts = gate.check([decoded(p) for p in paths])
    refused = [(p.name, v.explanation) for p, v in zip(paths, verdicts, strict=True) if v.flagged]
    assert len(paths) == 80 and len(refused) <= 1, refused


def test_a_dicom_whose_header_names_another_modality_is_refused_whatever_its_score(gate: OodGate, dicom_bytes) -> None:
    def read(modality: str) -> tuple[np.ndarray, str | None]:
        image = decode_image(dicom_bytes(modality=modality), "scan.dcm", max_bytes=2**24, max_pixels=10**7)
        return image.rgb, image.modality

    (mr, said_mr), (ct, said_ct), (blank_header, said_nothing) = read("MR"), read("CT"), read("")
    assert (said_mr, said_ct) == ("MR", "CT")
    verdicts = gate.check([mr, ct, blank_header], [said_mr, said_ct, said_nothing])
    # The same MRI pixels each time: the score passes them, the header alone refuses the one that says CT.
    assert [v.score <= v.threshold for v in verdicts] == [True, True, True]
    assert [v.flagged for v in verdicts] == [False, True, False]
    assert verdicts[1].reason.startswith("not a brain MRI slice: its DICOM header gives the modality as CT, not MR; ")
    assert not gate.check([mr], [" mr "])[0].flagged


def features_scoring(stats: OodStats, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Two feature rows on one line out of the first class mean: the last to score at most `target` and the
    first to score above it, found by bisection on the check's own scores."""
    rng = np.random.default_rng(5)
    direction = rng.normal(size=stats.class_means.shape[1])

    def at(t: float) -> np.ndarray:
        return (stats.center + stats.scale * (stats.class_means[0] + t * direction))[None, :]

    low, high = 0.0, 1.0
    while stats.scores(at(high))[0] <= target:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (middle, high) if stats.scores(at(middle))[0] <= target else (low, middle)
    return at(low), at(high)


def test_the_shipped_check_passes_a_score_just_below_its_threshold_and_flags_one_just_above(gate: OodGate) -> None:
    # The threshold the check uses is the one its report was written with, not a multiple of it.
    threshold = json.loads(report_path(CNN).read_text())["threshold"]
    assert gate.stats.threshold == threshold and gate.stats.percentile == 99.5
    below, above = features_scoring(gate.stats, threshold)
    passed, flagged = gate.verdicts(np.concatenate([below, above]))
    assert 0.999 * threshold < passed.score <= threshold < flagged.score < 1.001 * threshold
    assert (passed.flagged, flagged.flagged) == (False, True)
    assert passed.explanation.startswith(
        "it scores 1,663 on the out-of-distribution check, below its threshold of 1,663"
    )
    assert flagged.reason.startswith("not a brain MRI slice: it scores 1,663 on the out-of-distribution check, above")
    # A score exactly at the threshold is not above it: the image passes.
    assert OodVerdict(threshold, threshold, 99.5).flagged is False
    assert OodVerdict(math.nextafter(threshold, math.inf), threshold, 99.5).flagged is True


def test_the_shipped_statistics_and_report_belong_to_the_shipped_cnn() -> None:
    report = json.loads(report_path(CNN).read_text())
    assert report["model"]["sha256"] == file_sha256(CNN)
    assert report["validation"]["images"] > 800 and report["validation"]["rate"] < 0.02
    assert stats_path(CNN).stat().st_size < 2**20


@pytest.mark.slow
def test_without_statistics_for_the_cnn_the_check_says_it_is_off(db_url, tmp_path: Path) -> None:
    from models.nets.cnn import TumorCNN, save_checkpoint

    other = save_checkpoint(tmp_path / "retrained.pth", TumorCNN(), extra={})
    model = SimpleNamespace(framework="torch", artifact_path=str(other), sha256=file_sha256(other))
    gate, note = gate_for([model])
    assert gate is None and "no out-of-distribution statistics were fitted for retrained.pth" in note
    keras_only = SimpleNamespace(framework="keras", artifact_path="m.keras", sha256="0" * 64)
    assert gate_for([keras_only]) == (
        None,
        "Whether an image is a brain MRI slice is not checked: the check needs the Custom CNN (PyTorch) model, "
        "which is not in use. A DICOM file whose header names another modality than MR still gets no tumor class.",
    )


def test_a_batch_keeps_a_file_that_is_not_a_brain_mri_slice_for_a_clinician_without_an_answer(
    db_url, tmp_path, monkeypatch
) -> None:
    from services.batch import FileRules, load_models, predict_listing

    folder = tmp_path / "scans"
    (folder / "glioma").mkdir(parents=True)
    for path in sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[:2]:
        (folder / "glioma" / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (256, 256)).save(folder / "black.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / "noise.png")
    with session_scope() as session:
        version = register_model_version(
            session=session, framework="torch", name="cnn", artifact_path=CNN, sha256=file_sha256(CNN), activate=True
        )
        job_id = create_job(session=session, kind="batch", params={}).id
        version_id = version.id
    rules = FileRules("single", "P-1", threshold=0.7, max_bytes=2**24, max_pixels=40_000_000)
    models = load_models([version_id])
    gate, _ = gate_for(models)
    # The check's CNN is the job's: its features come from the run that predicts, never from a forward pass more.
    assert gate is not None and gate.predictor is models[0].predictor
    monkeypatch.setattr(gate.predictor, "features", lambda images: pytest.fail("a second forward pass for the check"))
    result = predict_listing(
        job_id,
        list_folder(folder),
        models,
        rules,
        progress=lambda *a: None,
        check_cancel=lambda: None,
    )
    with session_scope() as session:
        rows = {r.rel_path: r for r in batch_rows(session=session, job_id=job_id)}
        scans = session.scalar(select(func.count()).select_from(Scan))
        predictions = session.scalar(select(func.count()).select_from(Prediction))
    assert {p: r.status for p, r in rows.items()} == {
        "black.png": "skipped",
        "noise.png": "skipped",
        "glioma/" + sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0].name: "done",
        "glioma/" + sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[1].name: "done",
    }
    for name in ("black.png", "noise.png"):
        assert rows[name].error.startswith("not a brain MRI slice: it scores ") and not rows[name].results
        assert rows[name].patient_mrn == "P-1"
        # Kept as a scan with the check's reason and no model answer, so the review queue shows it first.
        with session_scope() as session:
            scan = session.get(Scan, rows[name].scan_id)
            assert scan.refusal == rows[name].error and scan.patient.mrn == "P-1"
    assert all(r.results["torch"]["label"] in CLASSES for r in rows.values() if r.status == "done")
    # The answers are the model's own for these images, as one-by-one predictions give them.
    gliomas = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[:2]
    expected = models[0].predictor.predict([decoded(path) for path in gliomas])
    got = [rows[f"glioma/{path.name}"].results["torch"]["probabilities"] for path in gliomas]
    assert np.abs(np.array([[g[c] for c in CLASSES] for g in got]) - expected).max() <= 1e-3
    assert (scans, predictions) == (4, 2) and result["skipped"] == 2 and result["done"] == 2
    assert result["ood_check"].startswith("Each image is first checked to be a brain MRI slice")


@pytest.mark.slow
def test_a_batch_gives_a_ct_dicom_no_tumor_class_even_when_the_cnn_has_no_statistics(
    db_url, tmp_path, dicom_bytes
) -> None:
    from models.nets.cnn import TumorCNN, save_checkpoint
    from services.batch import FileRules, load_models, predict_listing

    cnn = save_checkpoint(tmp_path / "without-statistics.pth", TumorCNN(), extra={})
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "head.dcm").write_bytes(dicom_bytes(modality="CT"))
    (folder / "brain.dcm").write_bytes(dicom_bytes())
    with session_scope() as session:
        version_id = register_model_version(
            session=session, framework="torch", name="cnn", artifact_path=cnn, sha256=file_sha256(cnn), activate=True
        ).id
        job_id = create_job(session=session, kind="batch", params={}).id
    models = load_models([version_id])
    assert gate_for(models)[0] is None
    options = FileRules("none", None, threshold=0.7, max_bytes=2**24, max_pixels=40_000_000)
    result = predict_listing(
        job_id, list_folder(folder), models, options, progress=lambda *a: None, check_cancel=lambda: None
    )
    with session_scope() as session:
        rows = {r.rel_path: (r.status, r.error) for r in batch_rows(session=session, job_id=job_id)}
    assert rows["brain.dcm"][0] == "done"
    assert rows["head.dcm"] == ("skipped", "not a brain MRI slice: its DICOM header gives the modality as CT, not MR")
    assert "still gets no tumor class" in result["ood_check"]
