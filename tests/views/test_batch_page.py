"""The batch page: checking the input as it is typed, starting a job, and the results of a finished one."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db.batches import add_batch_item
from db.jobs import create_job, finish_job, get_job, recent_jobs
from db.runs import register_model_version
from db.session import session_scope
from settings import ROOT, SAMPLE_DIR, get_settings
from tests.entries import shown
from tests.users import signed_in

PAGE = str(ROOT / "views" / "2_Batch.py")


@pytest.fixture
def roots(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The sample folder and a temporary folder are the allowed roots."""
    monkeypatch.setenv("ALLOWED_DATA_ROOTS", f"{SAMPLE_DIR}:{tmp_path}")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def model_id(roots: Path) -> int:
    with session_scope() as session:
        return register_model_version(
            session=session,
            framework="torch",
            name="cnn-v1",
            artifact_path=roots / "cnn.pth",
            sha256="a" * 64,
            activate=True,
        ).id


def open_page(query: dict[str, str] | None = None) -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=30))
    for name, value in (query or {}).items():
        at.query_params[name] = value
    at.run()
    assert not at.exception
    return at


def type_folder(at: AppTest, folder: str) -> AppTest:
    at.text_input(key="batch_folder").set_value(folder)
    at.run()
    assert not at.exception
    return at


def test_the_page_renders_without_models_or_jobs(roots) -> None:
    at = open_page()
    assert "Choose at least one model" in at.warning[0].value
    assert at.button(key="batch_submit").disabled
    assert "No batch has been run yet" in at.info[0].value


def test_a_folder_outside_the_roots_shows_why(roots) -> None:
    at = type_folder(open_page(), "/etc")
    assert "/etc is outside the allowed data folders" in at.error[0].value


def test_a_path_that_climbs_out_with_dots_shows_why(roots) -> None:
    at = type_folder(open_page(), f"{SAMPLE_DIR}/../../..")
    assert "climbs out of them with '..'" in at.error[0].value.replace("\\", "")  # shown as written


def test_the_sample_folder_is_offered_and_described(model_id) -> None:
    at = open_page()
    at.button(key="batch_use_sample").click()
    at.run()
    assert at.text_input(key="batch_folder").value == str(SAMPLE_DIR)
    assert "80 image(s) to predict, 80 of them in class folders" in at.success[0].value
    assert not at.button(key="batch_submit").disabled


@pytest.mark.slow
def test_starting_a_batch_queues_a_job_and_shows_its_panel(model_id) -> None:
    at = type_folder(open_page(), str(SAMPLE_DIR))
    at.radio(key="batch_patient_mode").set_value("single")
    at.run()
    at.text_input(key="batch_patient_id").set_value("P-5").run()
    assert "The others go to 1 patient(s)" in at.caption[-1].value or any("1 patient(s)" in c.value for c in at.caption)
    at.button(key="batch_submit").click()
    at.run()
    assert not at.exception and not at.error
    job_id = at.selectbox(key="batch_pick").value
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        assert job.kind == "batch" and job.status == "queued"
        assert job.params["patient_mrn"] == "P-5" and job.params["model_version_ids"] == [model_id]
    assert any(f"Job {job_id}" in md.value and "waiting for a worker" in md.value for md in at.markdown)


@pytest.mark.slow
def test_a_double_click_on_start_makes_one_job_and_a_later_click_another(model_id) -> None:
    at = type_folder(open_page(), str(SAMPLE_DIR))
    at.button(key="batch_submit").click().run()
    at.button(key="batch_submit").click().run()  # the second click of a double click
    assert not at.exception and not at.error
    with session_scope() as session:
        assert [job.kind for job in recent_jobs(session=session)] == ["batch"]
    at.radio(key="batch_patient_mode").set_value("none").run()  # any other step in between
    at.button(key="batch_submit").click().run()
    with session_scope() as session:
        assert len(recent_jobs(session=session)) == 2


@pytest.fixture
def finished_job(model_id: int) -> int:
    """A labelled batch: two files predicted (one wrongly, flagged), one unreadable, one skipped."""

    def result(label: str, confidence: float) -> dict:
        probs = {
            c: (confidence if c == label else (1 - confidence) / 3)
            for c in ("glioma", "meningioma", "notumor", "pituitary")
        }
        return {
            "torch": {"label": label, "confidence": confidence, "probabilities": probs, "model_version_id": model_id}
        }

    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params={"source": "folder", "folder": str(SAMPLE_DIR)}).id
        add_batch_item(
            session=session,
            job_id=job_id,
            rel_path="glioma/a.jpg",
            status="done",
            true_label="glioma",
            results=result("glioma", 0.9),
        )
        add_batch_item(
            session=session,
            job_id=job_id,
            rel_path="notumor/b.jpg",
            status="done",
            true_label="notumor",
            results=result("pituitary", 0.5),
            needs_review=True,
        )
        add_batch_item(
            session=session,
            job_id=job_id,
            rel_path="notumor/c.jpg",
            status="error",
            error="the image is truncated or damaged",
        )
        add_batch_item(session=session, job_id=job_id, rel_path="readme.txt", status="skipped", error="not an image")
        note = "Each image is first checked to be a brain MRI slice (statistics of cnn_v1.pth, threshold 1,405)."
        finish_job(session=session, job_id=job_id, status="succeeded", result={"done": 2, "ood_check": note})
    return job_id


def test_results_show_scores_filters_and_csv(finished_job) -> None:
    at = open_page({"job": str(finished_job)})
    assert at.metric[0].value == "2" and at.metric[1].value == "1" and at.metric[3].value == "1"
    assert any(m.label == "Custom CNN (PyTorch) accuracy" and m.value == "50.0%" for m in at.metric)
    assert len(at.dataframe[-1].value) == 4
    # Which check the images went through is said beside the figures, as text.
    note = next(c.value for c in at.caption if "brain MRI slice" in c.value)
    assert "cnn\\_v1\\.pth" in note
    assert note.replace("\\", "").startswith(
        "Each image is first checked to be a brain MRI slice (statistics of cnn_v1"
    )
    at.checkbox(key=f"batch_filter_review:{finished_job}").check()
    at.run()
    table = at.dataframe[-1].value
    assert list(table["file"]) == ["notumor/b.jpg"]
    # Why it is flagged, in words, and no column calls the model's answer final.
    assert list(table["why"]) == ["Custom CNN (PyTorch) is 50% confident, below 70%"]
    assert list(table["Custom CNN (PyTorch): answer"]) == ["Pituitary"] and list(table["read"]) == [""]
    assert "Download these 1 rows as CSV" in at.get("download_button")[0].proto.label


def test_a_failed_job_can_be_run_again_from_the_page(model_id) -> None:
    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params={"source": "folder", "folder": str(SAMPLE_DIR)}).id
        finish_job(session=session, job_id=job_id, status="failed", error="the worker stopped responding")
    at = open_page({"job": str(job_id)})
    assert "the worker stopped responding" in at.error[0].value
    at.button(key=f"batch_rerun:{job_id}").click()
    at.run()
    assert f"Job {job_id} is queued again." in [info.value.replace("\\", "") for info in at.info]
    with session_scope() as session:
        assert get_job(session=session, job_id=job_id).status == "queued"


def test_an_empty_folder_or_one_without_images_is_refused_before_start(model_id, roots) -> None:
    (roots / "empty").mkdir()
    at = type_folder(open_page(), str(roots / "empty"))
    assert "holds no JPEG, PNG or DICOM file to predict: it is empty." in at.error[0].value
    assert at.button(key="batch_submit").disabled
    (roots / "notes").mkdir()
    (roots / "notes" / "a.txt").write_text("not a scan")
    at = type_folder(at, str(roots / "notes"))
    assert "holds no JPEG, PNG or DICOM file to predict, only 1 other file(s)." in at.error[0].value
    assert at.button(key="batch_submit").disabled


@pytest.mark.slow
def test_an_empty_zip_is_refused_before_start(model_id) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "no scans here")
    at = open_page()
    at.radio(key="batch_source").set_value("An uploaded .zip").run()
    at.file_uploader(key="batch_zip").set_value(("scans.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception
    assert "This zip holds no JPEG, PNG or DICOM file to predict." in at.error[0].value
    assert at.button(key="batch_submit").disabled


def test_the_patient_mode_fits_a_folder_without_dicom_and_says_who_gets_no_patient(model_id) -> None:
    at = type_folder(open_page(), str(SAMPLE_DIR))
    mode = at.radio(key="batch_patient_mode")
    assert "dicom" not in mode.options and mode.value == "none"
    assert "80 of 80 image(s) would be saved without a patient" in at.info[0].value
    mode.set_value("folder").run()
    assert "named like tumor classes" in at.warning[0].value


@pytest.mark.slow
def test_a_folder_with_dicom_defaults_to_its_header_and_counts_each_case(model_id, roots, dicom_bytes) -> None:
    folder = roots / "ward"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(dicom_bytes(patient_mrn="HOSP 123/456"))
    (folder / "b.dcm").write_bytes(dicom_bytes(patient_mrn="hosp 123/456 "))  # the same patient
    (folder / "c.dcm").write_bytes(dicom_bytes(patient_mrn=""))
    (folder / "d.dcm").write_bytes(dicom_bytes(patient_mrn="BAD\\ID"))
    (folder / "e.jpg").write_bytes(sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0].read_bytes())
    at = type_folder(open_page(), str(folder))
    assert at.radio(key="batch_patient_mode").value == "dicom"
    assert "2 of 5 image(s) would be saved without a patient" in at.info[0].value
    assert any("The others go to 1 patient(s)" in c.value for c in at.caption)
    assert "1 image(s) carry a patient id that breaks the rule" in at.warning[0].value
    assert not at.button(key="batch_submit").disabled


def test_a_failed_job_shows_a_persons_message_and_only_admins_the_detail(model_id) -> None:
    from worker.jobs import ERROR_DETAIL, UNEXPECTED

    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params={"source": "folder", "folder": str(SAMPLE_DIR)}).id
        finish_job(
            session=session,
            job_id=job_id,
            status="failed",
            error=UNEXPECTED,
            result={ERROR_DETAIL: "OSError: [Errno 28] No space left on device: '/srv/brainmri/var/scans/ab.png'"},
        )
    clinician = signed_in(AppTest.from_file(PAGE, default_timeout=30), "clinician")
    clinician.query_params["job"] = str(job_id)
    clinician.run()
    assert at_error(clinician) == UNEXPECTED
    assert "/srv" not in " ".join(e.value for e in clinician.get("code"))
    admin = open_page({"job": str(job_id)})
    assert at_error(admin) == UNEXPECTED
    assert "/srv/brainmri/var/scans/ab.png" in admin.get("code")[0].value


def at_error(at: AppTest) -> str:
    return shown(at.error[0].value)
