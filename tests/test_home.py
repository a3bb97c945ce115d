"""The home page renders the system's state from the database and submits a self-check job."""

import pytest
from streamlit.testing.v1 import AppTest

from db.jobs import get_job, recent_jobs
from db.runs import register_model_version
from db.scans import get_or_create_patient, get_or_create_scan
from db.session import session_scope
from settings import ROOT
from tests.entries import shown
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
    assert any("cnn-run-7 (version" in shown(block.value) for block in at.markdown)


@pytest.mark.slow
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


def _everything_written(at: AppTest) -> str:
    """Every text the page shows, its tables included."""
    texts = [
        e.value for kind in ("markdown", "caption", "info", "error", "warning", "subheader") for e in getattr(at, kind)
    ]
    texts += [link.proto.label for link in at.get("page_link")]
    texts += [frame.value.to_csv() for frame in at.dataframe]
    return "\n".join(texts)


@pytest.fixture
def two_clinicians_work(stored):  # type: ignore[no-untyped-def]
    """Each of two clinicians saved scans for a patient and started a batch job that failed on a server path."""
    from db.jobs import create_job, finish_job
    from domain import AuditAction
    from services.auth import audit
    from tests.users import make_actor

    mine, theirs = make_actor("clinician"), make_actor("clinician", "other-clinician")
    jobs = {}
    with session_scope() as session:
        for actor, mrn in ((mine, "MRN-2"), (theirs, "MRN-1")):
            job = create_job(session=session, kind="batch", params={}, submitted_by=actor.user_id)
            finish_job(session=session, job_id=job.id, status="failed", error="/srv/secret/batches/x: unreadable")
            jobs[actor.username] = job.id
            audit(actor, AuditAction.UPLOAD, target="scan 1", patient_mrn=mrn, session=session)
    return jobs


def test_a_clinicians_home_shows_their_own_work_and_nothing_of_the_server(two_clinicians_work):
    at = signed_in(AppTest.from_file(HOME, default_timeout=30), "clinician").run()
    assert not at.exception
    written = _everything_written(at)
    assert [s.value for s in at.subheader] == [
        "Awaiting a read",
        "Active models",
        "Your recent patients",
        "Your background jobs",
    ]
    assert [link.proto.label.split(" · ")[0] for link in at.get("page_link") if "scan(s)" in link.proto.label] == [
        "MRN\\-2"
    ]
    [jobs] = [frame.value for frame in at.dataframe]
    assert list(jobs["job"]) == [two_clinicians_work["test-clinician"]]
    assert "/srv/secret" not in written and "sqlite" not in written and "Redis" not in written
    assert not at.metric  # the stored counts are the admins'


def test_an_admins_home_shows_the_system_and_everyones_jobs(two_clinicians_work, db_url):
    at = signed_in(AppTest.from_file(HOME, default_timeout=30)).run()
    assert not at.exception
    assert [s.value for s in at.subheader][:3] == ["System", "Awaiting a read", "Active models"]
    [jobs] = [frame.value for frame in at.dataframe]
    assert sorted(jobs["job"]) == sorted(two_clinicians_work.values())
    assert "/srv/secret/batches/x: unreadable" in list(jobs["message"])
    assert any(db_url.split("///")[1] in m.value for m in at.markdown)
