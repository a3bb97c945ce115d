"""The review queue page: the next case after a read (never a neighbour's form), filters and counts, a patient
assigned to an anonymous scan, a linked scan, and the Home page's count of scans awaiting a read."""

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.jobs import create_job
from db.runs import register_model_version
from db.schema import CLASSES, AuditEntry, Read, Scan
from db.session import session_scope
from models.data.imaging import decode_image
from services.diagnosis import model_result, save_scan_with_predictions
from settings import ROOT, SAMPLE_DIR
from tests.entries import shown
from tests.users import make_actor, signed_in

PAGE = str(ROOT / "views" / "9_Review.py")
HOME = str(ROOT / "Home.py")


def answer(label: str, confidence: float) -> list[float]:
    return [confidence if c == label else (1 - confidence) / 3 for c in CLASSES]


@pytest.fixture
def queue(db_url: str) -> dict[str, int]:
    """Three scans awaiting a read: an anonymous one of a batch whose models disagree, a patient's unsure one,
    and a patient's sure one; the models' files are absent, so heatmaps say why they are missing."""
    with session_scope() as session:
        torch = register_model_version(
            session=session, framework="torch", name="cnn-v1", artifact_path="/nowhere/c.pth", sha256="a" * 64
        ).id
        keras = register_model_version(
            session=session, framework="keras", name="m-v1", artifact_path="/nowhere/m.keras", sha256="b" * 64
        ).id
        job = create_job(session=session, kind="batch", params={"source": "folder", "folder": str(SAMPLE_DIR)}).id
    scans = {"job": job}
    for key, mrn, picture, t, k, job_id in [
        ("disagree", None, "pituitary", ("pituitary", 0.9), ("glioma", 0.9), job),
        ("unsure", "P-2", "meningioma", ("meningioma", 0.5), ("meningioma", 0.9), None),
        ("sure", "P-1", "glioma", ("glioma", 0.95), ("glioma", 0.93), None),
    ]:
        path = sorted((SAMPLE_DIR / picture).glob("*.jpg"))[0]
        with session_scope() as session:
            saved = save_scan_with_predictions(
                session=session,
                decoded=decode_image(path.read_bytes(), path.name, max_bytes=2**24, max_pixels=40_000_000),
                patient_mrn=mrn,
                source="batch" if job_id else "upload",
                results=[
                    model_result(framework="torch", model_version_id=torch, probabilities=answer(*t)),
                    model_result(framework="keras", model_version_id=keras, probabilities=answer(*k)),
                ],
                threshold=0.7,
                original_name=path.name,
                job_id=job_id,
            )
            scans[key] = saved.scan.id
    return scans


def open_page(query: dict[str, str] | None = None, role: str = "clinician") -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60), role)
    for name, value in (query or {}).items():
        at.query_params[name] = value
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def case_of(at: AppTest) -> int:
    return int(at.session_state["review_case"])


def read(at: AppTest, scan_id: int, label: str, note: str = "") -> AppTest:
    at.radio(key=f"review_read_label_{scan_id}").set_value(label)
    if note:
        at.text_area(key=f"review_read_note_{scan_id}").input(note)
    at.button(key=f"review_read_save_{scan_id}").click()
    return run(at)


@pytest.mark.slow
def test_a_clinician_reads_case_after_case_and_the_form_left_open_is_the_next_cases(queue) -> None:
    at = open_page()
    assert metrics(at) == {"Awaiting a read": "3", "Flagged": "2", "Without a patient": "1", "Read": "0"}
    assert case_of(at) == queue["disagree"]  # flagged first
    assert "Flagged: the models disagree." in at.warning[0].value
    # Both models' answers beside the image, and each heatmap or why it is missing.
    text = shown(" ".join(m.value for m in at.markdown))
    assert "answered **Pituitary**" in text and "answered **Glioma**" in text
    assert len(at.error) == 2 and all("could not be computed" in e.value for e in at.error)

    # The next case's widgets are its own: the first case's choice never carries over to it.
    at.radio(key=f"review_read_label_{queue['disagree']}").set_value("pituitary")
    at = read(at, queue["disagree"], "pituitary", note="sellar mass")
    assert shown(at.success[0].value) == f"Read saved: scan #{queue['disagree']} read as Pituitary."
    assert case_of(at) == queue["unsure"]
    assert at.radio(key=f"review_read_label_{queue['unsure']}").value is None
    assert at.query_params["scan"] == str(queue["unsure"])  # a reload opens the same case
    assert metrics(at)["Read"] == "1" and metrics(at)["Awaiting a read"] == "2"

    at.button(key="review_next").click()  # skip it: it stays in the queue
    at = run(at)
    assert case_of(at) == queue["sure"]
    at = read(at, queue["sure"], "glioma")
    assert case_of(at) == queue["unsure"]  # the one skipped comes round again
    at = read(at, queue["unsure"], "not_assessable")
    assert "No scan awaits a read under these filters." in at.success[-1].value
    with session_scope() as session:
        saved = session.execute(select(Read.scan_id, Read.label, Read.read_by, Read.note).order_by(Read.id)).all()
        audited = session.scalars(select(AuditEntry.target).where(AuditEntry.action == "review")).all()
    assert saved == [
        (queue["disagree"], "pituitary", "test-clinician", "sellar mass"),
        (queue["sure"], "glioma", "test-clinician", None),
        (queue["unsure"], "not_assessable", "test-clinician", None),
    ]
    assert audited == [f"scan {queue[k]}" for k in ("disagree", "sure", "unsure")]


@pytest.mark.slow
def test_a_patient_is_assigned_to_an_anonymous_batch_scan_from_the_queue(queue) -> None:
    at = open_page({"job": str(queue["job"])})
    assert at.selectbox(key="review_f_job").value == queue["job"]
    assert case_of(at) == queue["disagree"]
    scan = queue["disagree"]
    at.radio(key=f"review_patient_{scan}::mode").set_value("New patient")
    at = run(at)
    at.text_input(key=f"review_patient_{scan}::new").set_value("  p-1 ")  # P-1 exists: matched, not a twin
    at = run(at)
    assert any("Patient P-1 is already in the record" in shown(c.value) for c in at.caption)
    at.button(key=f"review_assign_{scan}").click()
    at = run(at)
    assert shown(at.success[0].value) == f"Scan #{scan} now belongs to patient P-1."
    with session_scope() as session:
        assert session.get(Scan, scan).patient.mrn == "P-1"
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "scan_assigned")).all()
    assert (entry.username, entry.patient_mrn) == ("test-clinician", "P-1")
    assert metrics(at)["Without a patient"] == "0"


@pytest.mark.slow
def test_filters_narrow_the_queue_and_its_counts(queue) -> None:
    at = open_page()
    at.selectbox(key="review_f_reason").set_value("low_confidence")
    at = run(at)
    assert case_of(at) == queue["unsure"]
    at.selectbox(key="review_f_reason").set_value("any")
    at.text_input(key="review_f_patient").set_value("P-1")
    at = run(at)
    assert case_of(at) == queue["sure"] and metrics(at)["Awaiting a read"] == "1"
    at.text_input(key="review_f_patient").set_value("")
    at.checkbox(key="review_f_anonymous").check()
    at = run(at)
    assert case_of(at) == queue["disagree"] and metrics(at)["Awaiting a read"] == "1"


def test_a_linked_scan_opens_even_once_read(queue) -> None:
    with session_scope() as session:
        session.add(Read(scan_id=queue["sure"], label="glioma", read_by="dr-yang"))
    at = open_page({"scan": str(queue["sure"])})
    assert case_of(at) == queue["sure"]
    assert "not awaiting a read" in at.info[0].value
    assert "**Read: Glioma** by dr-yang" in shown(" ".join(m.value for m in at.markdown))


def test_the_home_page_says_how_many_scans_await_a_read(queue) -> None:
    make_actor("clinician")
    at = signed_in(AppTest.from_file(HOME, default_timeout=60), "clinician").run()
    assert not at.exception
    assert any("3 scan(s) await a clinician's read, 2 of them flagged for review." in m.value for m in at.markdown)
