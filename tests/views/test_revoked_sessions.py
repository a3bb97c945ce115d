"""Every page, drawn for a signed-in user who is then disabled, demoted or left idle past the limit: the next
click (a button's callback or the page's own run) and every download prepared with the page do nothing, and
the refusal is audited; the tab is back at the sign-in form with the reason."""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from db.audit import AuditFilters, audit_page
from db.batches import add_batch_item
from db.jobs import create_job, finish_job, get_job
from db.runs import get_active_model, register_model_version
from db.scans import get_or_create_patient, get_or_create_scan
from db.schema import Job, Prediction, Read, Scan, User, UserSession
from db.session import session_scope
from domain import NotAllowed
from services import auth
from services.model_files import file_sha256
from settings import ROOT, SAMPLE_DIR, get_settings
from tests.users import login_of, make_actor, signed_in

REVOCATIONS = ["disabled", "demoted", "idle"]
SAID = {
    "disabled": "Your account was disabled",
    "demoted": "An admin changed your role",
    "idle": "minutes without activity",
}
REASON = {"disabled": "disabled", "demoted": "role_changed", "idle": "idle"}  # as the refusal records it


def page(name: str) -> str:
    return str(next((ROOT / "views").glob(f"{name}*.py")))


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable]:
    """What each download button will run when clicked, by its file id (Streamlit's own registry, watched)."""
    captured: dict[str, Callable] = {}
    register = MediaFileManager.add_deferred

    def watched(self, data_callable, *args, **kwargs):  # type: ignore[no-untyped-def]
        file_id = register(self, data_callable, *args, **kwargs)
        captured[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", watched)
    return captured


def revoke(how: str, at: AppTest) -> None:
    """Another admin disables or demotes the tab's user, or the tab sits idle past the limit."""
    with session_scope() as session:
        user_id = session.get(UserSession, login_of(at)).user_id
    root = make_actor("admin", "root")
    if how == "disabled":
        auth.set_disabled(root, user_id=user_id, disabled=True)
    elif how == "demoted":
        auth.change_role(root, user_id=user_id, role="clinician")
    else:
        with session_scope() as session:
            minutes = get_settings().session_idle_minutes + 1
            session.get(UserSession, login_of(at)).last_seen_at -= timedelta(minutes=minutes)


def refused_for(how: str) -> bool:
    """Whether a refusal of alice's, for this reason, is in the audit log."""
    with session_scope() as session:
        rows = audit_page(session=session, filters=AuditFilters(username="alice", action="refused"), per_page=50)
    return any((r.detail or "").endswith(f"({REASON[how]})") for r in rows)


def back_at_the_sign_in_form(at: AppTest, how: str) -> None:
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]
    assert any(SAID[how] in w.value for w in at.warning)


def count(model: type) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def draw(name: str, query: dict[str, str] | None = None, state: dict | None = None) -> AppTest:
    """The page as alice, an admin (so every page is hers to open), sees it."""
    at = signed_in(AppTest.from_file(page(name), default_timeout=120), "admin", "alice")
    for key, value in (query or {}).items():
        at.query_params[key] = value
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception
    return at


def register_cnn(path: Path, seed: int, *, activate: bool) -> int:
    """A real (untrained) CNN checkpoint, registered."""
    import torch

    from models.nets.cnn import TumorCNN, save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, TumorCNN(), extra={})
    with session_scope() as session:
        version = register_model_version(
            session=session,
            framework="torch",
            name=path.stem,
            artifact_path=path,
            sha256=file_sha256(path),
            activate=activate,
        )
        return version.id


def failed_batch_job() -> int:
    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params={"source": "folder", "folder": str(SAMPLE_DIR)}).id
        add_batch_item(session=session, job_id=job_id, rel_path="notes.txt", status="skipped", error="not an image")
        finish_job(session=session, job_id=job_id, status="failed", error="the worker stopped responding")
    return job_id


def scan_with_prediction() -> tuple[int, int, int]:
    """A patient with one scan and one prediction: their ids."""
    with session_scope() as session:
        patient = get_or_create_patient(session=session, mrn="P-1")
        scan, _ = get_or_create_scan(
            session=session,
            patient_pk=patient.id,
            sha256="a" * 64,
            file_path="/s/a.png",
            original_name="a.png",
            source="upload",
            width=8,
            height=8,
            image_format="PNG",
        )
        version = register_model_version(
            session=session, framework="torch", name="cnn-v1", artifact_path="/m/cnn.pth", sha256="a" * 64
        )
        prediction = Prediction(
            scan_id=scan.id,
            model_version_id=version.id,
            label="glioma",
            confidence=0.9,
            probabilities={"glioma": 0.9, "meningioma": 0.05, "notumor": 0.03, "pituitary": 0.02},
        )
        session.add(prediction)
        session.flush()
        return patient.id, scan.id, prediction.id


# Clicks: each case draws its page up to an enabled control, and returns the click and what would show that it
# took effect.


def users_change_role(tmp: Path) -> tuple:
    nora = make_actor("clinician", "nora").user_id
    at = draw("7_Users")
    at.selectbox(key="users_pick").set_value(nora).run()
    at.radio(key=f"users_role_{nora}").set_value("admin").run()

    def done() -> bool:
        with session_scope() as session:
            return session.get(User, nora).role == "admin"

    return at, f"users_role_apply_{nora}", done


def models_activate(tmp: Path) -> tuple:
    ids = [register_cnn(tmp / f"cnn-{seed}.pth", seed, activate=seed == 0) for seed in (0, 1)]
    at = draw("6_Models")
    at.selectbox(key="models_promote_torch").set_value(ids[1]).run()
    # Neither tiny model has recorded figures: making one active takes a typed reason.
    at.text_input(key="models_reason_torch").input("a test of revoked sessions").run()

    def done() -> bool:
        with session_scope() as session:
            return get_active_model(session=session, framework="torch").id == ids[1]

    return at, "models_activate_torch", done


def batch_rerun(tmp: Path) -> tuple:
    job_id = failed_batch_job()
    at = draw("2_Batch", {"job": str(job_id)})

    def done() -> bool:
        with session_scope() as session:
            return get_job(session=session, job_id=job_id).status != "failed"

    return at, f"batch_rerun:{job_id}", done


def home_selfcheck(tmp: Path) -> tuple:
    at, before = draw("0_Overview"), count(Job)
    return at, "selfcheck", lambda: count(Job) > before


def train_submit(tmp: Path) -> tuple:
    at, before = draw("4_Train"), count(Job)
    return at, "train_submit", lambda: count(Job) > before


def history_review(tmp: Path) -> tuple:
    patient_pk, scan_id, _ = scan_with_prediction()
    at = draw("3_History", state={"history_patient_id": patient_pk})
    at.radio(key=f"history_read_label_{scan_id}").set_value("glioma").run()
    return at, f"history_read_save_{scan_id}", lambda: count(Read) > 0


def diagnose_save(tmp: Path) -> tuple:
    register_cnn(tmp / "cnn.pth", 0, activate=True)
    with session_scope() as session:
        get_or_create_patient(session=session, mrn="P-9")
    at = draw("1_Diagnose")
    path = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0]
    at.file_uploader(key="diagnose_files").set_value([(path.name, path.read_bytes(), "image/jpeg")]).run()
    at.selectbox(key="diagnose_patient::existing").set_value("P-9").run()
    before = count(Scan)
    return at, "diagnose_save", lambda: count(Scan) > before


# True where the button runs a callback (before the page's own run) that still holds the user's Actor: the service
# it calls must refuse by itself, and the refusal names the user. The job controls read the tab's session when
# clicked (a refusal then names nobody); the other buttons act in the page's run, which stops at its sign-in check.
CLICKS = {
    "Users: change a role": (users_change_role, True),
    "Models: make a version active": (models_activate, True),
    "Batch: run a failed job again": (batch_rerun, False),
    "Home: run a self-check": (home_selfcheck, False),
    "Train: start training": (train_submit, False),
    "History: save a read": (history_review, False),
    "Diagnose: save to the record": (diagnose_save, False),
}


@pytest.mark.parametrize("how", REVOCATIONS)
@pytest.mark.parametrize("case", list(CLICKS))
@pytest.mark.slow
def test_a_click_after_the_user_was_revoked_does_nothing(db_url, tmp_path, case, how):
    prepare, refused_as_the_user = CLICKS[case]
    at, key, done = prepare(tmp_path)
    assert not at.exception and not at.button(key=key).disabled
    revoke(how, at)
    at.button(key=key).click().run()
    back_at_the_sign_in_form(at, how)
    assert not done()
    if refused_as_the_user:
        assert refused_for(how)


# Downloads: prepared when the page was drawn, run when clicked, by then for a revoked user.


def audit_csv(tmp: Path) -> tuple[AppTest, str]:
    auth.audit(None, "sign_in_failed")  # an entry to export
    return draw("8_Audit"), "audit_csv"


def history_csv(tmp: Path) -> tuple[AppTest, str]:
    scan_with_prediction()
    return draw("3_History"), "history_csv"


def batch_csv(tmp: Path) -> tuple[AppTest, str]:
    job_id = failed_batch_job()
    return draw("2_Batch", {"job": str(job_id)}), f"batch_csv:{job_id}"


def model_file(tmp: Path) -> tuple[AppTest, str]:
    register_cnn(tmp / "cnn.pth", 0, activate=True)
    return draw("6_Models"), "models_download_button_torch"


DOWNLOADS = {
    "Audit log: the CSV": audit_csv,
    "History: the predictions CSV": history_csv,
    "Batch: the results CSV": batch_csv,
    "Models: the model file": model_file,
}


@pytest.mark.parametrize("how", REVOCATIONS)
@pytest.mark.parametrize("case", list(DOWNLOADS))
def test_a_download_prepared_before_the_user_was_revoked_is_refused(db_url, tmp_path, deferred, case, how):
    at, key = DOWNLOADS[case](tmp_path)
    write = deferred[at.download_button(key=key).proto.deferred_file_id]
    revoke(how, at)
    with pytest.raises(NotAllowed, match=SAID[how]):
        write()
    assert refused_for(how)
    with session_scope() as session:
        exports = audit_page(session=session, filters=AuditFilters(username="alice", action="export"), per_page=5)
        downloads = audit_page(session=session, filters=AuditFilters(action="model_downloaded"), per_page=5)
    assert exports == [] and downloads == []
