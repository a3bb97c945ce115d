import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.runs import register_model_version
from db.scans import get_or_create_patient
from db.schema import Patient, Prediction, Scan
from db.session import session_scope
from domain import CLASSES, class_label
from models.data.imaging import decode_image, make_overlay
from models.training.backends import backends
from services.model_files import file_sha256
from settings import DEFAULT_MODEL_FILES, ROOT, SAMPLE_DIR, get_settings
from tests.entries import shown
from tests.users import signed_in
from ui.text import literal

PAGE = str(ROOT / "views" / "1_Diagnose.py")
CLASS_WORDS = tuple(class_label(name) for name in CLASSES)


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real CNN checkpoint in the format the predictor loads; untrained weights are enough to exercise the page."""
    import torch

    from models.nets.cnn import TumorCNN, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "cnn.pth", TumorCNN(), extra={})


@pytest.fixture(scope="module")
def mobilenet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, small, untrained MobileNetV2 model file."""
    from models.nets.mobilenet import build_model
    from models.training.config import make_config

    cfg = make_config("keras", str(SAMPLE_DIR), pretrained=False, image_size=96, augment="none")
    path = tmp_path_factory.mktemp("weights") / "mobilenet.keras"
    build_model(cfg, None).save(path)
    return path


def sure_cnn(path: Path, label: str, logit: float = 3.0) -> Path:
    """A CNN that answers `label` for every image, as sure as a softmax of `logit` for that class and 0 for the others
    (87.0 % for 3): its last layer weighs nothing and its bias favours the class."""
    import torch

    from models.nets.cnn import TumorCNN, save_checkpoint

    model = TumorCNN()
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([logit if c == label else 0.0 for c in CLASSES]))
    return save_checkpoint(path, model, extra={})


@pytest.fixture(scope="module")
def sure_mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MobileNetV2 model file that answers meningioma for every image, 71.1 % sure (a softmax of 2 for
    meningioma and 0 for the others)."""
    from models.nets.mobilenet import build_model
    from models.training.config import make_config

    cfg = make_config("keras", str(SAMPLE_DIR), pretrained=False, image_size=96, augment="none")
    model = build_model(cfg, None)
    probs = model.get_layer("probs")
    kernel, _ = probs.get_weights()
    probs.set_weights([np.zeros_like(kernel), np.array([2.0 if c == "meningioma" else 0.0 for c in CLASSES])])
    path = tmp_path_factory.mktemp("weights") / "mobilenet-meningioma.keras"
    model.save(path)
    return path


def activate(framework: str, path: Path) -> int:
    with session_scope() as session:
        version = register_model_version(
            session=session,
            framework=framework,
            name=path.stem,
            artifact_path=path,
            sha256=file_sha256(path),
            activate=True,
        )
        return version.id


@pytest.fixture
def active_cnn(db_url: str, cnn_checkpoint: Path) -> int:
    return activate("torch", cnn_checkpoint)


def sample_jpeg(cls: str = "glioma", n: int = 0) -> tuple[str, bytes]:
    path = sorted((SAMPLE_DIR / cls).glob("*.jpg"))[n]
    return path.name, path.read_bytes()


def open_page(role: str = "admin") -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60), role)
    at.run()
    assert not at.exception
    return at


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader(key="diagnose_files").set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    assert not at.exception
    return at


def choose_existing(at: AppTest, mrn: str) -> None:
    at.selectbox[0].set_value(mrn)
    at.run()


def save(at: AppTest) -> AppTest:
    at.button(key="diagnose_save").click()
    at.run()
    assert not at.exception
    return at


def add_patient(mrn: str) -> None:
    with session_scope() as session:
        get_or_create_patient(session=session, mrn=mrn)


def rows() -> tuple[list[Scan], list[Prediction]]:
    with session_scope() as session:
        return list(session.scalars(select(Scan))), list(session.scalars(select(Prediction)))


def test_page_without_an_active_model_points_to_training(db_url):
    at = open_page()
    assert "No model is active yet" in at.error[0].value and "Train page" in at.error[0].value
    assert not at.file_uploader


def test_a_model_whose_file_is_gone_is_reported_not_crashed_on(db_url, tmp_path):
    missing = tmp_path / "gone.pth"
    with session_scope() as session:
        register_model_version(
            session=session, framework="torch", name="gone", artifact_path=missing, sha256="0" * 64, activate=True
        )
    at = open_page()
    assert "is not used: its file is missing" in shown(at.error[0].value) and str(missing) in shown(at.error[0].value)
    assert not at.file_uploader


@pytest.mark.slow
def test_an_active_model_whose_file_changed_is_refused_and_the_other_still_answers(
    db_url, tmp_path, cnn_checkpoint, mobilenet_checkpoint
):
    import shutil

    copy = tmp_path / "cnn-copy.pth"
    shutil.copyfile(cnn_checkpoint, copy)
    activate("torch", copy)
    activate("keras", mobilenet_checkpoint)
    with copy.open("ab") as f:
        f.write(b"tampered")  # the file on disk is no longer the one registered
    at = upload(open_page(), [sample_jpeg()])
    [error] = [shown(e.value) for e in at.error]
    assert "Custom CNN (PyTorch) model (cnn-copy) is not used: its file changed after it was registered" in error
    assert [m.label for m in at.metric] == ["MobileNetV2 (Keras)"]


@pytest.mark.slow
def test_sample_jpeg_is_predicted_and_saved_with_its_model_version(db_url, active_cnn):
    add_patient("P-1")
    name, data = sample_jpeg()
    at = upload(open_page(), [(name, data)])
    assert at.metric[0].value in CLASS_WORDS  # in words: "No tumor", never notumor
    choose_existing(at, "P-1")
    save(at)
    assert at.success[0].value == f"Saved to patient {literal('P-1')}'s record: 1 new scan(s), 1 new prediction(s)."
    scans, predictions = rows()
    assert [(s.original_name, s.image_format, s.source) for s in scans] == [(name, "JPEG", "upload")]
    assert [(p.scan_id, p.model_version_id) for p in predictions] == [(scans[0].id, active_cnn)]
    assert class_label(predictions[0].label) == at.metric[0].value
    assert Path(scans[0].file_path).read_bytes() == data


@pytest.mark.slow
def test_dicom_is_saved_without_anything_that_names_the_person(db_url, active_cnn, dicom_bytes):
    at = upload(open_page(), [("series.dcm", dicom_bytes())])
    # The header's PatientID is offered as a new patient for the clinician to confirm.
    assert at.text_input[0].value == "P-0042"
    [caption] = [shown(c.value) for c in at.caption if "modality" in c.value]
    assert "modality MR" in caption and "study date 2024-01-31" in caption
    save(at)
    at.run()
    assert at.button(key="diagnose_save").disabled  # a re-run of the page cannot save again
    scans, predictions = rows()
    assert [(s.image_format, s.modality, s.study_date, s.series_description) for s in scans] == [
        ("DICOM", "MR", "2024-01-31", "AX T1 POST")
    ]
    with session_scope() as session:
        assert session.scalar(select(Patient.mrn)) == "P-0042"
    stored = [p.read_bytes() for p in get_settings().upload_dir.rglob("*") if p.is_file()]
    database = [p.read_bytes() for p in Path(db_url.split("///", 1)[1]).parent.glob("brainmri.db*")]
    assert len(stored) == 1 and len(predictions) == 1
    assert not any(b"Doe" in blob or b"19700101" in blob for blob in stored + database)


@pytest.mark.slow
def test_the_same_image_uploaded_twice_for_a_patient_is_one_scan(db_url, active_cnn):
    add_patient("P-1")
    files = [sample_jpeg()]
    first = upload(open_page(), files)
    choose_existing(first, "P-1")
    save(first)
    again = upload(open_page(), files + [("copy.jpg", files[0][1])])
    choose_existing(again, "P-1")
    save(again)
    assert "0 new scan(s), 0 new prediction(s). 2 scan(s) were already in the record" in again.success[0].value
    scans, predictions = rows()
    assert len(scans) == 1 and len(predictions) == 1


@pytest.mark.slow
def test_confidence_below_a_high_threshold_needs_review(db_url, active_cnn, monkeypatch):
    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "0.99")
    get_settings.cache_clear()
    add_patient("P-1")
    at = upload(open_page(), [sample_jpeg()])
    assert any("Needs review" in w.value and "below 99%" in w.value for w in at.warning)
    choose_existing(at, "P-1")
    save(at)
    assert [p.needs_review for p in rows()[1]] == [True]


@pytest.mark.slow
def test_a_confident_single_model_is_not_flagged(db_url, active_cnn, monkeypatch):
    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "0.0")
    get_settings.cache_clear()
    add_patient("P-1")
    at = upload(open_page(), [sample_jpeg()])
    assert not any("Needs review" in w.value for w in at.warning)
    choose_existing(at, "P-1")
    save(at)
    assert [p.needs_review for p in rows()[1]] == [False]


AGREEMENT = {
    # The CNN's answer: what the page says of the two answers, and the review flag it shows.
    "meningioma": (
        "The models **agree**: Meningioma.",
        "No review flag: the models agree and each is at least 70% confident.",
    ),
    "glioma": (
        "The models **disagree**: Custom CNN (PyTorch) says Glioma, MobileNetV2 (Keras) says Meningioma. "
        "Their own answers are below; the clinician decides.",
        "**Needs review**: the models disagree.",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("cnn_says", list(AGREEMENT))
def test_both_active_models_answer_side_by_side_and_the_page_says_whether_they_agree(
    db_url, tmp_path, sure_mobilenet, cnn_says
):
    cnn_version = activate("torch", sure_cnn(tmp_path / f"cnn-{cnn_says}.pth", cnn_says))
    keras_version = activate("keras", sure_mobilenet)
    add_patient("P-1")
    at = upload(open_page(), [sample_jpeg()])
    # Each model's own answer under its own name: the CNN's 87.0 % sure, MobileNetV2's meningioma 71.1 % sure.
    assert [(m.label, m.value) for m in at.metric] == [
        ("Custom CNN (PyTorch)", class_label(cnn_says)),
        ("MobileNetV2 (Keras)", "Meningioma"),
    ]
    assert [c.value for c in at.caption if c.value.startswith("Confidence")] == ["Confidence 87.0%", "Confidence 71.1%"]
    said, flag = AGREEMENT[cnn_says]
    # No pair report was made for these two: their one answer is the plain average, which favours the CNN's class.
    [answer] = [m.value for m in at.markdown if m.value.startswith("**Answer: ")]
    assert answer.startswith(f"**Answer: {class_label(cnn_says)}**") and "no pair report applies to them" in answer
    assert [m.value for m in at.markdown if "The models **" in m.value] == [said]
    shown_flags = [w.value for w in at.warning if "Needs review" in w.value] + [
        s.value for s in at.success if s.value.startswith("No review flag")
    ]
    assert shown_flags == [flag]
    choose_existing(at, "P-1")
    save(at)
    flagged = cnn_says != "meningioma"
    assert sorted((p.model_version_id, p.label, p.needs_review) for p in rows()[1]) == [
        (cnn_version, cnn_says, flagged),
        (keras_version, "meningioma", flagged),
    ]


def pair_page(monkeypatch, mobilenet: Path, probabilities: dict[str, list[float]], rule) -> AppTest:  # type: ignore[no-untyped-def]
    """The page with both models active, each answering every image with these probabilities, judged by `rule`
    (as if their pair report chose it), one sample image uploaded; patient P-1 exists."""
    import services.uploads
    import ui.predictors

    def fixed(framework, artifact_path, model_sha256, images):  # type: ignore[no-untyped-def]
        return [np.array(probabilities[framework]) for _ in images]

    activate("keras", mobilenet)
    monkeypatch.setattr(ui.predictors, "probabilities_many", fixed)
    monkeypatch.setattr(services.uploads, "versions_rule", lambda version_ids: rule)
    add_patient("P-1")
    return upload(open_page(), [sample_jpeg()])


@pytest.mark.slow
def test_when_the_models_disagree_the_page_names_the_answer_of_the_pair_rule(
    db_url, active_cnn, mobilenet_checkpoint, monkeypatch
):
    from models.inference.combination import Combination
    from services.diagnosis import PairRule

    rule = PairRule(Combination("mobilenet"), threshold=0.9, on_disagreement=True)
    probabilities = {"torch": [0.9, 0.05, 0.03, 0.02], "keras": [0.1, 0.8, 0.05, 0.05]}
    at = pair_page(monkeypatch, mobilenet_checkpoint, probabilities, rule)
    texts = [m.value for m in at.markdown]
    assert (
        "**Answer: Meningioma**, 80.0% confident — the answer is MobileNetV2's: combining did not beat it on "
        "validation." in texts
    )
    assert (
        "The models **disagree**: Custom CNN (PyTorch) says Glioma, MobileNetV2 (Keras) says Meningioma. Their own "
        "answers are below; the clinician decides." in texts
    )
    [warning] = [w.value for w in at.warning]
    assert warning == ("**Needs review**: the combined answer is 80.0% confident, below 90%; the models disagree.")
    choose_existing(at, "P-1")
    save(at)
    assert [p.needs_review for p in rows()[1]] == [True, True]


def test_a_sure_combined_answer_of_models_that_agree_is_not_flagged(
    db_url, active_cnn, mobilenet_checkpoint, monkeypatch
):
    from models.inference.combination import Combination
    from services.diagnosis import PairRule

    rule = PairRule(Combination("average"), threshold=0.75, on_disagreement=True)
    # The CNN alone is unsure (below the settings' 70 %), but the rule judges the combined answer only.
    probabilities = {"torch": [0.6, 0.2, 0.1, 0.1], "keras": [0.95, 0.03, 0.01, 0.01]}
    at = pair_page(monkeypatch, mobilenet_checkpoint, probabilities, rule)
    [answer] = [m.value for m in at.markdown if m.value.startswith("**Answer")]
    assert (
        answer
        == "**Answer: Glioma**, 77.5% confident — from the average of both models' probabilities, chosen on validation."
    )
    assert not at.warning
    assert [s.value for s in at.success] == [
        "No review flag: it is raised when the combined answer is less than 75% confident or the models disagree."
    ]


@pytest.mark.slow
def test_saving_links_to_the_patients_history(db_url, active_cnn):
    add_patient("P-1")
    at = signed_in(AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60))
    at.run()
    at.switch_page("views/1_Diagnose.py").run()
    upload(at, [sample_jpeg()])
    choose_existing(at, "P-1")
    save(at)
    links = [link for link in at.get("page_link") if "history" in link.proto.label]
    assert [(link.proto.label, link.proto.query_string) for link in links] == [
        (f"Open patient {literal('P-1')}'s history", "patient=P-1")
    ]


@pytest.fixture
def shipped_cnn(db_url: str) -> int:
    """The shipped CNN, the one model whose out-of-distribution statistics ship beside it."""
    return activate("torch", DEFAULT_MODEL_FILES["torch"])


def black_png() -> tuple[str, bytes]:
    out = io.BytesIO()
    Image.new("RGB", (256, 256)).save(out, format="PNG")
    return "black.png", out.getvalue()


@pytest.mark.slow
def test_a_blank_image_gets_no_tumor_class_unless_its_answer_is_asked_for_and_is_never_saved(db_url, shipped_cnn):
    add_patient("P-1")
    mri = sample_jpeg()
    at = upload(open_page(), [black_png(), mri])
    [error] = [e.value for e in at.error]
    assert "Not a brain MRI slice — no tumor class shown" in error and "trained on brain MRI slices only" in error
    assert "threshold" not in error  # the figures are behind "Details"
    [details] = [t for t in at.toggle if t.label == "Details"]
    details.set_value(True).run()
    assert any("above its threshold of" in c.value for c in at.caption)
    assert len(at.metric) == 1  # the MRI slice's answer only
    assert at.button(key="diagnose_save").label == "Save 1 scan(s) to the record"
    at.checkbox[0].check().run()
    assert not at.exception
    assert len(at.metric) == 2
    assert any("Shown anyway, for an image that is not a brain MRI slice" in w.value for w in at.warning)
    choose_existing(at, "P-1")
    save(at)
    scans, predictions = rows()
    assert [s.original_name for s in scans] == [mri[0]] and len(predictions) == 1


@pytest.mark.slow
def test_several_uploads_are_checked_and_predicted_as_one_batch_per_model_and_remembered(
    db_url, shipped_cnn, monkeypatch
):
    from services.ood import ood_gate
    from services.predictors import loaded_predictor
    from ui.image_cache import image_cache

    cnn = DEFAULT_MODEL_FILES["torch"]
    ood_gate.cache_clear()  # the check then uses the very predictor watched here, as a fresh process would
    predictor = loaded_predictor("torch", str(cnn), file_sha256(cnn))
    assert ood_gate(str(cnn), file_sha256(cnn)).predictor is predictor
    calls: dict[str, list[int]] = {"features": [], "predict": []}
    for method in calls:
        real = getattr(predictor, method)

        def spy(images, real=real, method=method):  # type: ignore[no-untyped-def]
            calls[method].append(len(images))
            return real(images)

        monkeypatch.setattr(predictor, method, spy)
    image_cache().clear()
    mri = [sample_jpeg("glioma", 0), sample_jpeg("pituitary", 1), sample_jpeg("notumor", 2)]
    at = upload(open_page(), [*mri, black_png()])
    assert calls == {"features": [4], "predict": [3]}  # the check for all four, the model for the three MRIs
    assert len(at.metric) == 3
    at.run()  # a redraw asks nothing again
    assert calls == {"features": [4], "predict": [3]}
    at.checkbox[0].check().run()  # the flagged image's answer, asked for, is the only new prediction
    assert calls == {"features": [4], "predict": [3, 1]} and len(at.metric) == 4


def test_a_dicom_whose_header_says_ct_gets_no_tumor_class(db_url, shipped_cnn, dicom_bytes):
    at = upload(open_page(), [("head.dcm", dicom_bytes(modality="CT")), ("brain.dcm", dicom_bytes())])
    [error] = [e.value for e in at.error]
    assert "Not a brain MRI slice" in error and "its DICOM header gives the modality as CT, not MR" in error
    assert "scores" not in error
    assert len(at.metric) == 1  # the MR file's answer only
    assert at.button(key="diagnose_save").label == "Save 1 scan(s) to the record"


def test_heatmap_and_its_overlay_have_the_image_shape(cnn_checkpoint, dicom_bytes):
    tall = np.asarray(Image.open(io.BytesIO(sample_jpeg()[1])).convert("L").resize((160, 200)), dtype=np.uint16)
    decoded = decode_image(dicom_bytes(pixels=tall * 16), "tall.dcm", max_bytes=2**24, max_pixels=10**7)
    cam = backends["torch"].load_predictor(cnn_checkpoint).heatmap(decoded.rgb)
    assert cam.shape == decoded.rgb.shape[:2] == (200, 160)
    assert make_overlay(decoded.rgb, cam, 0.5).shape == decoded.rgb.shape


@pytest.fixture
def bad_files(db_url, dicom_bytes, monkeypatch) -> dict[str, tuple[bytes, str]]:
    """Each kind of bad upload, with the words its message must contain; the upload limit is 1 MB."""
    monkeypatch.setenv("MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()
    jpeg = sample_jpeg()[1]
    bomb = io.BytesIO()
    Image.new("L", (8000, 8000)).save(bomb, format="PNG")  # 64 M pixels, compressed to a few kB
    return {
        "notes.jpg": (b"not an image at all\n" * 20, "not a JPEG, PNG or DICOM image"),
        "empty.png": (b"", "the file is empty"),
        "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated or damaged"),
        "huge.jpg": (jpeg + b"\0" * (2**20), "over the limit of 1 MB"),
        "bomb.png": (bomb.getvalue(), "decompression bomb"),
        "line.dcm": (dicom_bytes(pixels=np.arange(64, dtype=np.uint16).reshape(1, 64)), "not a 2-D slice"),
        "broken.dcm": (b"\0" * 128 + b"DICM" + bytes(range(256)) * 4, "holds no image"),
    }


def test_each_bad_file_gets_its_message_and_the_good_one_is_still_saved(db_url, active_cnn, bad_files):
    add_patient("P-1")
    good = sample_jpeg("meningioma")
    at = upload(open_page(), [(name, data) for name, (data, _) in bad_files.items()] + [good])
    errors = [shown(e.value) for e in at.error]
    for name, (_, message) in bad_files.items():
        assert any(name in e and message in e for e in errors), (name, errors)
    choose_existing(at, "P-1")
    save(at)
    scans, _ = rows()
    assert [s.original_name for s in scans] == [good[0]]


def test_only_bad_files_save_nothing(db_url, active_cnn, bad_files):
    at = upload(open_page(), [(name, data) for name, (data, _) in bad_files.items()])
    assert len(at.error) == len(bad_files) and not at.button
    with session_scope() as session:
        assert session.scalar(select(func.count(Scan.id))) == 0


def test_an_invalid_new_patient_id_cannot_be_saved(db_url, active_cnn):
    at = upload(open_page(), [sample_jpeg()])
    at.text_input[0].set_value("Jane\\Doe")
    at.run()
    assert "holds a backslash" in at.error[0].value and "1 to 64 characters" in at.error[0].value
    assert at.button(key="diagnose_save").disabled


HOSTILE = "**x**<img src=x onerror=alert(1)>"


def test_a_patient_id_from_a_dicom_header_is_shown_as_text(db_url, active_cnn, dicom_bytes):
    at = upload(open_page(), [("a.dcm", dicom_bytes(patient_mrn=HOSTILE)), ("b.dcm", dicom_bytes(patient_mrn="P-1"))])
    [warning] = [w.value for w in at.warning if "name different patients" in w.value]
    assert literal(HOSTILE) in warning and HOSTILE not in warning


def test_more_files_than_the_cap_are_refused_with_a_way_out(db_url, active_cnn, monkeypatch):
    monkeypatch.setenv("MAX_FILES_PER_UPLOAD", "2")
    get_settings.cache_clear()
    at = upload(open_page(), [sample_jpeg(cls, 0) for cls in ("glioma", "meningioma", "pituitary")])
    assert [e.value for e in at.error] == [
        "3 files were chosen; at most 2 are analysed at once. Remove some, or predict a whole folder or zip on "
        "the Batch page."
    ]
    assert not at.metric and rows() == ([], [])


def test_the_uploader_states_the_real_size_limit(db_url, active_cnn, monkeypatch):
    monkeypatch.setenv("MAX_UPLOAD_MB", "7")
    get_settings.cache_clear()
    at = open_page()
    [uploader] = at.get("file_uploader")
    assert uploader.proto.max_upload_size_mb == 7  # what the widget shows and the browser holds to
    assert "up to 7 MB each and 20 at once" in uploader.proto.label


def test_several_files_start_with_a_summary_and_each_scan_folds(db_url, shipped_cnn):
    files = [sample_jpeg("glioma", 0), sample_jpeg("notumor", 0), black_png()]
    at = upload(open_page(), files)
    summary = at.dataframe[0].value
    assert list(summary.columns) == ["file", "answer", "flag"]
    assert list(summary["file"]) == [name for name, _ in files]
    assert set(summary["answer"][:2]) <= set(CLASS_WORDS)
    assert list(summary["answer"])[2] == "Not a brain MRI slice: no tumor class"
    assert list(summary["flag"])[2] == "Not a brain MRI slice"
    assert [e.proto.expanded for e in at.expander] == [False, False, False]
    assert [e.label.split(" · ")[0] for e in at.expander] == [literal(name) for name, _ in files]


def test_each_heatmap_can_be_hidden_and_both_compared_side_by_side(db_url, active_cnn, mobilenet_checkpoint):
    activate("keras", mobilenet_checkpoint)
    at = upload(open_page(), [sample_jpeg()])

    def images() -> list[str]:
        return [image.proto.imgs[0].caption for image in at.get("image") if image.proto.imgs[0].caption]

    assert images()[0] == "Original" and [c.split(":")[0] for c in images()[1:]] == [
        "HiResCAM heatmap",
        "Occlusion heatmap",
    ]
    assert any(c.value.startswith("Colour scale of every heatmap") for c in at.caption)
    assert any(c.value.startswith("HiResCAM: where the CNN found the evidence") for c in at.caption)
    at.toggle(key="diagnose_map_torch").set_value(False).run()
    assert [c.split(":")[0] for c in images()] == ["Original", "Occlusion heatmap"]
    at.toggle(key="diagnose_map_torch").set_value(True)
    at.toggle(key="diagnose_compare").set_value(True).run()
    assert not at.exception
    assert [c.split(":")[0] for c in images()] == ["HiResCAM heatmap", "Occlusion heatmap"]


def test_a_clinician_is_told_to_ask_an_admin_and_sees_no_server_path(db_url, tmp_path):
    missing = tmp_path / "gone.pth"
    with session_scope() as session:
        register_model_version(
            session=session, framework="torch", name="gone", artifact_path=missing, sha256="0" * 64, activate=True
        )
    at = open_page("clinician")
    [error] = [e.value for e in at.error]
    assert "Ask an admin" in error and str(tmp_path) not in error and "gone.pth" not in error
    assert not at.get("page_link")  # Train and Models are admin pages


@pytest.mark.slow
def test_unsaved_results_come_back_after_a_reload_and_can_still_be_saved(db_url, shipped_cnn, dicom_bytes):
    add_patient("P-1")
    files = [sample_jpeg("meningioma", 0), ("ct.dcm", dicom_bytes(modality="CT", patient_mrn="P-1"))]
    first = upload(open_page(), files)
    answers = [m.value for m in first.metric]
    [manifest] = get_settings().artifact_dir.glob("unsaved/*/manifest.json")
    kept_at = json.loads(manifest.read_text())["kept_at"]

    reloaded = open_page()  # a new browser session of the same user, its uploader empty
    assert any("were not saved to a record" in i.value for i in reloaded.info)
    assert json.loads(manifest.read_text())["kept_at"] == kept_at  # shown again, not kept again: it still expires
    assert [m.value for m in reloaded.metric] == answers
    assert any("its DICOM header gives the modality as CT" in e.value for e in reloaded.error)  # still refused
    choose_existing(reloaded, "P-1")
    save(reloaded)
    scans, _ = rows()
    assert [s.original_name for s in scans] == [files[0][0]]
    # Saved, it is in the record: another reload shows nothing kept (the refused image is never saved, and
    # without a savable scan beside it there is nothing left to come back to).
    again = open_page()
    assert not any("were not saved to a record" in i.value for i in again.info)


@pytest.mark.slow
def test_unsaved_results_are_their_users_own_and_go_when_discarded(db_url, active_cnn):
    upload(open_page(), [sample_jpeg()])
    assert not open_page("clinician").metric  # another user's reload
    mine = open_page()
    assert len(mine.metric) == 1
    mine.button(key="diagnose_discard").click().run()
    assert not mine.metric
    assert not open_page().metric


@pytest.mark.slow
def test_removing_every_file_from_the_uploader_discards_them(db_url, active_cnn):
    at = upload(open_page(), [sample_jpeg()])
    at.file_uploader(key="diagnose_files").set_value([])
    at.run()
    assert not at.exception and not at.metric
    assert not open_page().metric


@pytest.mark.slow
def test_an_upload_that_runs_its_decoder_past_the_limit_is_refused_once_and_the_others_are_analysed(db_url, active_cnn):
    from services.decoding import sandbox
    from tests.env import environment
    from tests.models.test_sandbox import costly_dicom
    from ui.image_cache import image_cache

    image_cache().clear()
    with environment(DECODE_CPU_S="0.5"):
        at = upload(open_page(), [("noise.dcm", costly_dicom()), sample_jpeg()])
        [error] = [shown(e.value) for e in at.error]
        assert "Not analysed: noise.dcm: the file was not decoded: decoding it used more than 0.5 s" in error
        assert len(at.metric) == 1  # the other file's answer
        children = [c.process.pid for c in list(sandbox()._idle.queue)]
        at.run()  # a redraw does not decode the refused file again: its child stays the same
        assert [shown(e.value) for e in at.error] == [error]
        assert [c.process.pid for c in list(sandbox()._idle.queue)] == children


@pytest.mark.slow
def test_a_ct_dicom_gets_no_tumor_class_even_when_the_active_cnn_has_no_statistics(db_url, active_cnn, dicom_bytes):
    at = upload(open_page(), [("head.dcm", dicom_bytes(modality="CT")), ("brain.dcm", dicom_bytes())])
    assert any("A DICOM file whose header names another modality than MR still gets" in i.value for i in at.info)
    [error] = [e.value for e in at.error]
    assert "Not a brain MRI slice" in error and "its DICOM header gives the modality as CT, not MR" in error
    assert len(at.metric) == 1  # the MR file's answer only
    assert at.button(key="diagnose_save").label == "Save 1 scan(s) to the record"
