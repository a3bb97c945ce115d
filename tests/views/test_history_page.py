from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.runs import register_model_version
from db.schema import AuditEntry, Patient, Read, Scan
from db.session import session_scope
from models.data.imaging import decode_image
from services.diagnosis import model_result, save_scan_with_predictions
from services.model_files import file_sha256
from settings import ROOT, SAMPLE_DIR
from tests.entries import scan_entry, shown
from tests.users import signed_in
from ui.text import literal

PAGE = str(ROOT / "views" / "3_History.py")


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, untrained CNN checkpoint: enough for its heatmap to run."""
    import torch

    from models.nets.cnn import TumorCNN, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "cnn.pth", TumorCNN(), extra={})


@dataclass
class Record:
    patient_pk: int
    scan_id: int
    torch_prediction: int
    keras_prediction: int
    file: Path


@pytest.fixture
def record(db_url: str, cnn_checkpoint: Path) -> Record:
    """Patient P-777 with one glioma scan, seen by a real CNN and by a MobileNet whose file is gone."""
    path = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0]
    decoded = decode_image(path.read_bytes(), path.name, max_bytes=2**24, max_pixels=40_000_000)
    with session_scope() as session:
        cnn = register_model_version(
            session=session,
            framework="torch",
            name="cnn-v1",
            artifact_path=cnn_checkpoint,
            sha256=file_sha256(cnn_checkpoint),
        )
        mobilenet = register_model_version(
            session=session, framework="keras", name="mobilenet-v1", artifact_path="/nowhere/m.keras", sha256="b" * 64
        )
        saved = save_scan_with_predictions(
            session=session,
            decoded=decoded,
            patient_mrn="P-777",
            source="upload",
            results=[
                model_result(framework="torch", model_version_id=cnn.id, probabilities=[0.9, 0.05, 0.03, 0.02]),
                model_result(framework="keras", model_version_id=mobilenet.id, probabilities=[0.2, 0.6, 0.1, 0.1]),
            ],
            threshold=0.7,
            original_name=path.name,
        )
        torch_row, keras_row = saved.predictions
        return Record(saved.scan.patient_pk, saved.scan.id, torch_row.id, keras_row.id, Path(saved.scan.file_path))


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception
    return at


def open_record(record: Record) -> AppTest:
    at = run(signed_in(AppTest.from_file(PAGE, default_timeout=120)))
    at.selectbox(key="history_open_select").set_value(record.patient_pk)
    return run(at)


def test_page_lists_the_seeded_patient(record):
    at = run(signed_in(AppTest.from_file(PAGE, default_timeout=60)))
    table = at.dataframe[0].value
    assert list(table["Patient id"]) == ["P-777"] and list(table["Awaiting a read"]) == [1]
    assert list(table["Last result"]) == ["glioma / meningioma (models, not read)"]


def test_patient_link_opens_the_record_with_both_models_predictions(record):
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60))
    at.query_params["patient"] = "P-777"
    run(at)
    assert shown(at.header[0].value) == "Patient P-777"
    text = shown(" ".join(m.value for m in at.markdown))
    assert "Custom CNN (PyTorch) (cnn-v1) answered **Glioma**" in text
    assert "MobileNetV2 (Keras) (mobilenet-v1) answered **Meningioma**" in text
    assert "**Not read yet**" in text


@pytest.mark.slow
def test_a_read_submitted_on_the_page_is_saved_under_the_signed_in_user_and_audited(record):
    at = open_record(record)
    scan = record.scan_id
    at.radio(key=f"history_read_label_{scan}").set_value("glioma")
    at.text_area(key=f"history_read_note_{scan}").input("rim enhancement")
    at.button(key=f"history_read_save_{scan}").click().run()
    assert not at.exception
    assert shown(at.success[0].value) == f"Read saved: scan #{scan} read as Glioma."
    with session_scope() as session:
        [row] = session.scalars(select(Read)).all()
        assert (row.scan_id, row.label, row.read_by, row.note) == (scan, "glioma", "test-admin", "rim enhancement")
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "review")).all()
    assert (entry.username, entry.target, entry.patient_mrn) == ("test-admin", f"scan {scan}", "P-777")
    assert entry.detail.startswith("read as Glioma, a class of the reader's choice; models: ")
    assert "Custom CNN (PyTorch) glioma 90%" in entry.detail and entry.detail.endswith("note: rim enhancement")
    text = shown(" ".join(m.value for m in at.markdown))
    assert "**Read: Glioma** by test-admin" in text and "rim enhancement" in text


@pytest.mark.slow
def test_a_read_without_a_class_shows_why_and_saves_nothing(record):
    at = open_record(record)
    at.button(key=f"history_read_save_{record.scan_id}").click().run()
    assert not at.exception
    assert "Choose the final class of the scan" in at.error[0].value
    with session_scope() as session:
        assert session.scalars(select(Read)).all() == []


@pytest.mark.slow
def test_show_heatmap_draws_grad_cam_or_says_why_not(record):
    at = open_record(record)
    images = len(at.image)
    at.button(key=f"history_heatmap_{record.scan_id}").click().run()
    assert not at.exception
    assert len(at.image) == images + 1  # the CNN's heatmap
    assert "mobilenet-v1 (keras): the heatmap could not be computed" in at.error[0].value


@pytest.mark.slow
def test_deleting_a_patient_asks_first_then_removes_rows_and_file(record):
    at = open_record(record)
    at.button(key=f"history_delete_patient_{record.patient_pk}").click().run()
    assert not at.exception
    with session_scope() as session:
        assert session.get(Patient, record.patient_pk) is not None
    at.button(key=f"history_delete_patient_{record.patient_pk}_yes").click().run()
    assert not at.exception
    assert "Patient P-777 deleted" in shown(at.success[0].value)
    with session_scope() as session:
        assert session.get(Patient, record.patient_pk) is None and session.get(Scan, record.scan_id) is None
    assert not record.file.exists()


@pytest.mark.slow
def test_prepared_report_holds_the_scan_its_models_and_a_heatmap(record):
    at = open_record(record)
    at.checkbox(key=f"history_report_heatmaps_{record.patient_pk}").check()
    at.button(key=f"history_report_{record.patient_pk}").click().run()
    assert not at.exception
    html = at.session_state[f"history_report_html_{record.patient_pk}"]
    assert "P-777" in html and "cnn-v1" in html and "mobilenet-v1" in html
    assert "HiResCAM heatmap (cnn-v1 (torch))" in html and html.count("data:image/png;base64,") == 2
    assert at.download_button(key=f"history_report_download_{record.patient_pk}").label == "Download report (HTML)"


def _entry(study_date: str | None, created: datetime):  # type: ignore[no-untyped-def]
    return scan_entry(study_date=study_date, created_at=created)


def test_the_timeline_uses_the_study_date_as_stored_and_days_as_ticks() -> None:
    from db.history import PatientTimeline
    from ui.history_view import scan_date, timeline_chart

    uploaded = datetime(2026, 12, 1, 9, 30)
    assert scan_date(_entry("2024-03-05", uploaded)) == datetime(2024, 3, 5)  # what the DICOM reader stores
    assert scan_date(_entry("20240305", uploaded)) == datetime(2024, 3, 5)
    assert scan_date(_entry("March", uploaded)) == uploaded and scan_date(_entry(None, uploaded)) == uploaded
    fig = timeline_chart(PatientTimeline(patient_pk=1, mrn="P", created_at=uploaded, scans=[_entry(None, uploaded)]))
    low, high = fig.layout.xaxis.range
    assert fig.layout.xaxis.tickformat == "%Y-%m-%d" and high - low >= timedelta(days=2)


def test_a_patient_id_in_the_link_is_shown_as_text(db_url):
    hostile = "**x**<img src=x onerror=alert(1)>"
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60))
    at.query_params["patient"] = hostile
    run(at)
    assert [w.value for w in at.warning] == [f"No patient has the id {literal(hostile)}."]


@pytest.mark.slow
def test_an_admin_merges_a_twin_from_the_record_and_a_clinician_is_not_offered_it(record):
    from sqlalchemy import insert

    from db.schema import utcnow

    with session_scope() as session:
        # A twin as migration 0006 leaves one that existed before ids matched whatever their case.
        session.execute(insert(Patient).values(mrn="p-777", mrn_key=None, created_at=utcnow()))
    at = open_record(record)
    assert "have this id but for case or spaces: p\\-777" in at.warning[0].value
    twin = at.selectbox(key=f"history_merge_pick_{record.patient_pk}").value
    at.button(key=f"history_merge_{record.patient_pk}_{twin}").click().run()
    at.button(key=f"history_merge_{record.patient_pk}_{twin}_yes").click().run()
    assert not at.exception
    assert shown(at.success[0].value).startswith("Patient p-777 merged into P-777: 0 scan(s) moved")
    with session_scope() as session:
        assert session.get(Patient, twin) is None
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "patient_merged")).all()
    assert entry.username == "test-admin" and entry.patient_mrn == "P-777"
    clinician = signed_in(AppTest.from_file(PAGE, default_timeout=60), "clinician")
    clinician.run()
    clinician.selectbox(key="history_open_select").set_value(record.patient_pk)
    clinician.run()
    assert not clinician.exception and not [w for w in clinician.warning if "but for case" in w.value]


def test_the_whole_id_in_any_case_opens_the_record(record):
    at = run(signed_in(AppTest.from_file(PAGE, default_timeout=60)))
    at.text_input(key="history_search").set_value(" p-777 ").run()
    assert not at.exception and shown(at.header[0].value) == "Patient P-777"
