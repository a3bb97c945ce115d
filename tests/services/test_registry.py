"""Safe model changes: a run below the floor or at chance is not usable, and making a version active that costs
clinicians anything takes a reason, judged again when it acts and kept in the audit log."""

import pytest

from db.audit import AuditFilters, audit_page
from db.runs import get_active_model, import_run_summary, register_model_version
from db.session import session_scope
from domain import CLASSES, NotAllowed, UserError
from models.inference.model_meta import file_sha256, read_sidecar
from services.model_files import register_default_models
from services.registry import activate, activation_check, shortfalls
from settings import DEFAULT_WEIGHTS_DIR
from tests.users import make_actor

ARCHIVED_CNN = DEFAULT_WEIGHTS_DIR / "archive" / "cnn_2026-12-01.pth"
REASON = "the shipped one fails on our scanner"


def report(accuracy: float, support: list[int]) -> dict:
    """A validation report whose confusion matrix has `support` images per class."""
    return {"accuracy": accuracy, "labels": list(CLASSES), "confusion_matrix": [[n, 0, 0, 0] for n in support]}


def test_a_model_at_chance_or_below_the_floor_is_not_usable() -> None:
    balanced = [50, 50, 50, 50]
    [chance, floor] = shortfalls(report(0.30, balanced), floor=0.8)
    assert "is at chance: answering Glioma to every one of its 200 validation images scores 25.0 %" in chance
    assert "below the 80.0 % a model needs to be used" in floor
    assert shortfalls(report(0.40, balanced), floor=0.3) == []  # clearly above a quarter: not chance
    # Where one class is most of the images, answering it alone is the chance level to beat.
    [majority] = shortfalls(report(0.72, [140, 20, 20, 20]), floor=0.5)
    assert "answering Glioma to every one of its 200 validation images scores 70.0 %" in majority
    assert shortfalls(report(0.93, balanced), floor=0.8) == []
    assert shortfalls({}, floor=0.8) == ["it has no recorded validation accuracy"]


@pytest.fixture
def shipped_and_archived(db_url: str) -> tuple[int, int]:
    """The shipped CNN, active, and the one it replaced (78.5 %, uncalibrated, no brain-MRI check), registered
    with the runs their files carry."""
    with session_scope() as session:
        register_default_models(session=session)
        shipped = get_active_model(session=session, framework="torch").id
        sha = file_sha256(ARCHIVED_CNN)
        summary = read_sidecar(ARCHIVED_CNN)["run"]
        run = import_run_summary(session=session, summary=summary, artifact_path=ARCHIVED_CNN, sha256=sha)
        archived = register_model_version(
            session=session,
            framework="torch",
            name="cnn_2026-12-01",
            artifact_path=ARCHIVED_CNN,
            sha256=sha,
            run_id=run.id,
        ).id
    return shipped, archived


def test_the_archived_cnn_states_everything_it_would_lose(shipped_and_archived: tuple[int, int]) -> None:
    shipped, archived = shipped_and_archived
    check = activation_check(version_id=archived)
    assert check.needs_reason and check.notes == []
    floor, drop, calibration, ood = check.costs
    assert floor.startswith("its validation accuracy, 78.5 %, is below the 80.0 %")
    assert drop == (
        "it scores 78.5 % on the validation images where the active version (cnn_default) scores 93.0 %: "
        "14.5 points lower"
    )
    assert calibration.startswith("it has no calibration")
    assert ood.startswith("it has no statistics for the check that an image is a brain MRI slice")
    assert not activation_check(version_id=shipped).needs_reason  # the active one, as good as itself


def test_activating_it_takes_a_reason_and_audits_it(shipped_and_archived: tuple[int, int]) -> None:
    shipped, archived = shipped_and_archived
    admin = make_actor("admin")
    with pytest.raises(UserError, match="needs a reason of at least 10 characters"):
        activate(admin, version_id=archived, reason="because")
    with pytest.raises(NotAllowed):
        activate(make_actor("clinician"), version_id=archived, reason=REASON)
    with session_scope() as session:
        assert get_active_model(session=session, framework="torch").id == shipped
    activate(admin, version_id=archived, reason=f"  {REASON} ")
    with session_scope() as session:
        assert get_active_model(session=session, framework="torch").id == archived
        entries = audit_page(session=session, filters=AuditFilters(), per_page=10)
    promoted = [e for e in entries if e.action == "model_promoted"]
    assert [e.username for e in promoted] == ["test-admin"]
    assert promoted[0].detail.startswith(f"torch: cnn_2026-12-01, replacing version {shipped} (cnn_default); accepted")
    assert "14.5 points lower" in promoted[0].detail and promoted[0].detail.endswith(f"reason: {REASON}")
    assert [e.detail for e in entries if e.action == "refused"] == ["promote models"]
    # Going back to the shipped one costs nothing: no reason asked.
    activate(admin, version_id=shipped, rollback=True)
    with session_scope() as session:
        assert get_active_model(session=session, framework="torch").id == shipped
