"""Lists of patient records a person browses are audited once per query and page: every patient's predictions
on the History page, and another user's batch results."""

from streamlit.testing.v1 import AppTest

from db.audit import AuditFilters, audit_page
from db.batches import add_batch_item
from db.jobs import create_job, finish_job
from db.session import session_scope
from settings import ROOT, SAMPLE_DIR
from tests.users import make_actor, signed_in


def listed() -> list[tuple[str, str, str]]:
    with session_scope() as session:
        rows = audit_page(session=session, filters=AuditFilters(action="list_viewed"), per_page=50)
    return [(r.username, r.target, r.detail) for r in reversed(rows)]


def test_every_patients_predictions_are_audited_once_per_query_and_page(db_url):
    at = signed_in(AppTest.from_file(str(ROOT / "views" / "3_History.py"), default_timeout=60), "clinician").run()
    assert not at.exception
    first = ("test-clinician", "every patient's predictions", "page 1: 0 of 0 row(s); filters: none")
    assert listed() == [first]
    at.run()  # a redraw is not another view
    assert listed() == [first]
    at.multiselect(key="history_f_labels").set_value(["glioma"]).run()
    assert listed() == [
        first,
        ("test-clinician", "every patient's predictions", "page 1: 0 of 0 row(s); filters: labels glioma"),
    ]


def batch_job(submitted_by: int | None) -> int:
    with session_scope() as session:
        job_id = create_job(
            session=session,
            kind="batch",
            params={"source": "folder", "folder": str(SAMPLE_DIR)},
            submitted_by=submitted_by,
        ).id
        add_batch_item(session=session, job_id=job_id, rel_path="notes.txt", status="skipped", error="not an image")
        finish_job(session=session, job_id=job_id, status="succeeded", result={"done": 0})
    return job_id


def test_another_users_batch_results_are_audited_and_ones_own_are_not(db_url):
    own = batch_job(make_actor("clinician").user_id)
    others = batch_job(make_actor("clinician", "ben").user_id)
    page = str(ROOT / "views" / "2_Batch.py")
    for job_id in (own, others):
        at = signed_in(AppTest.from_file(page, default_timeout=60), "clinician")
        at.query_params["job"] = str(job_id)
        at.run()
        assert not at.exception
    detail = "page 1: 1 of 1 row(s); filters: needs review no"
    assert listed() == [("test-clinician", f"job {others} results", detail)]
