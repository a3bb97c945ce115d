"""The home page renders the system's state from the database and submits a self-check job."""

import pytest
from streamlit.testing.v1 import AppTest

from db.jobs import get_job, recent_jobs
from db.runs import register_model_version
from db.scans import get_or_create_patient, get_or_create_scan
from db.session import session_scope
from settings import ROOT
from tests.users import signed_in

HOME = str(ROOT / "Home.py")


@pytest.fixture
def stored(db_url):
    with session_scope() as session:
        for mrn in ("MRN-1", "MRN-2"):
            patient = get_or_create_patient(session=session, mrn=mrn)
            get_or_create_scan(
                session=session,
                patient_pk=patient.id,
                sha256=mrn.ljust(64, "0"),
                file_path="/s/x.png",
                original_name="x.png",
                source="upload",
                width=8,
                height=8,
                image_format="PNG",
            )
        for framework, name in (("torch", "cnn-run-7"), ("keras", "mobilenet-run-8")):
            register_model_version(
                session=session,
                framework=framework,
                name=name,
                artifact_path=f"/{name}",
                sha256="a" * 64,
                activate=True,
            )


def _metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def test_home_shows_counts_and_active_model(stored):
    at = signed_in(AppTest.from_file(HOME, default_timeout=30)).run()
    assert not at.exception
    assert _metrics(at) == {"Patients": "2", "Scans": "2", "Predictions": "0", "Training runs": "0"}
    assert any("cnn-run-7" in block.value for block in at.markdown)


def test_selfcheck_button_records_a_queued_job_with_a_cancel_button(db_url):
    at = signed_in(AppTest.from_file(HOME, default_timeout=30)).run()
    at.button(key="selfcheck").click().run()
    assert not at.exception
    with session_scope() as session:
        [job] = recent_jobs(session=session)
    assert job.kind == "selfcheck" and job.status in ("queued", "running", "succeeded")
    at.button(key=f"cancel-{job.id}").click().run()
    assert not at.exception
    with session_scope() as session:
        assert get_job(session=session, job_id=job.id).status == "cancelled"


def test_home_explains_an_unmigrated_database(monkeypatch, tmp_path):
    from db.session import reset_engine
    from settings import get_settings

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    reset_engine()
    try:
        at = AppTest.from_file(HOME, default_timeout=30).run()  # no users table to sign in with
    finally:
        reset_engine()
        monkeypatch.undo()
        get_settings.cache_clear()
    assert not at.exception
    assert "make migrate" in at.error[0].value


def test_the_shell_says_it_is_decision_support_above_every_page(db_url):
    at = signed_in(AppTest.from_file(HOME, default_timeout=30)).run()
    assert not at.exception
    assert "Decision support only" in at.warning[0].value
    assert at.title[0].value == "Brain tumor MRI classification"  # the Home page, run by the shell
