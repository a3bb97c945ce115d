"""The Models page: promoting a version changes what clinicians get; a file that changed is never promoted."""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from db.audit import AuditFilters, audit_page
from db.runs import get_active_model, register_model_version
from db.session import session_scope
from models.data.preprocessing import load_rgb
from models.training.backends import backends
from services.model_files import file_sha256
from settings import ROOT, SAMPLE_DIR
from tests.entries import shown
from tests.seed_runs import seed_run
from tests.users import signed_in

PAGE = str(ROOT / "views" / "6_Models.py")
REASON = "the new scanner's images need it"


def audit_entries(action: str) -> list:  # type: ignore[type-arg]
    with session_scope() as session:
        return [e for e in audit_page(session=session, filters=AuditFilters(), per_page=100) if e.action == action]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real CNN checkpoints with different (untrained) weights, so their predictions differ."""
    import torch

    from models.nets.cnn import TumorCNN, save_checkpoint

    folder = tmp_path_factory.mktemp("weights")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(folder / f"cnn-{seed}.pth", TumorCNN(), extra={}))
    return paths[0], paths[1]


def register(path: Path, *, activate: bool = False, sha256: str | None = None) -> int:
    with session_scope() as session:
        return register_model_version(
            session=session,
            framework="torch",
            name=path.stem,
            artifact_path=path,
            sha256=sha256 or file_sha256(path),
            activate=activate,
        ).id


@pytest.fixture
def two_versions(db_url: str, checkpoints: tuple[Path, Path]) -> tuple[int, int]:
    return register(checkpoints[0], activate=True), register(checkpoints[1])


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60)).run()
    assert not at.exception
    return at


def active_path() -> str:
    with session_scope() as session:
        return get_active_model(session=session, framework="torch").artifact_path


def promote(at: AppTest, version_id: int, reason: str | None = REASON) -> AppTest:
    at.selectbox(key="models_promote_torch").set_value(version_id).run()
    if reason is not None:
        at.text_input(key="models_reason_torch").input(reason).run()
    at.button(key="models_activate_torch").click().run()
    assert not at.exception
    return at


@pytest.mark.slow
def test_promoting_a_version_changes_the_model_the_predictor_loads(two_versions, checkpoints) -> None:
    old, new = two_versions
    at = open_page()
    assert at.selectbox(key="models_promote_torch").value == old  # the active one, not the newest
    promote(at, new)
    assert not at.exception
    assert active_path() == str(checkpoints[1])
    image = [load_rgb(next((SAMPLE_DIR / "glioma").glob("*.jpg")))]
    loaded = backends["torch"].load_predictor(active_path()).predict(image)
    assert np.allclose(loaded, backends["torch"].load_predictor(checkpoints[1]).predict(image))
    assert not np.allclose(loaded, backends["torch"].load_predictor(checkpoints[0]).predict(image))
    assert any(f"version {new}) is now the active" in s.value.replace("\\", "") for s in at.success)
    [entry] = audit_entries("model_promoted")
    assert entry.target == f"model version {new}" and entry.detail.endswith(f"reason: {REASON}")


@pytest.mark.slow
def test_the_previous_version_can_be_restored(two_versions, checkpoints) -> None:
    old, new = two_versions
    at = promote(open_page(), new)
    # The previous version has no recorded figures either: restoring it takes the same reason, through the form.
    at.button(key="models_restore_torch").click().run()
    assert not at.exception
    assert at.selectbox(key="models_promote_torch").value == old
    assert any(f"Restoring version {old} needs a reason" in w.value for w in at.warning)
    at.text_input(key="models_reason_torch").input(REASON).run()
    at.button(key="models_activate_torch").click().run()
    assert active_path() == str(checkpoints[0])
    assert [e.target for e in audit_entries("model_rolled_back")] == [f"model version {old}"]


@pytest.mark.slow
def test_a_file_that_changed_is_flagged_and_not_promoted(db_url, checkpoints) -> None:
    register(checkpoints[0], activate=True)
    tampered = register(checkpoints[1], sha256="0" * 64)
    at = open_page()
    at.selectbox(key="models_download_torch").set_value(tampered).run()
    assert any("changed since it was registered" in w.value for w in at.warning)
    promote(at, tampered)
    assert any("was not made active" in e.value for e in at.error)
    assert active_path() == str(checkpoints[0])


def test_a_missing_file_is_reported_and_an_intact_one_verified(db_url, checkpoints, tmp_path) -> None:
    intact = register(checkpoints[0], activate=True)
    gone = register(tmp_path / "deleted.pth", sha256="1" * 64)
    at = open_page()
    assert at.selectbox(key="models_download_torch").value == intact  # the active one comes first
    assert any("matches its registered sha256" in c.value for c in at.caption)
    at.selectbox(key="models_download_torch").set_value(gone).run()
    assert any("deleted.pth` is missing" in e.value for e in at.error)


@pytest.mark.slow
def test_each_version_shows_its_card_and_the_one_chosen_for_promotion_sits_above_the_button(
    db_url, checkpoints
) -> None:
    register(checkpoints[0], activate=True)
    run_id = seed_run("torch", 0.9)
    with session_scope() as session:
        chosen = register_model_version(
            session=session,
            framework="torch",
            name="seeded run",
            artifact_path=checkpoints[1],
            sha256=file_sha256(checkpoints[1]),
            run_id=run_id,
        ).id
    at = open_page()
    at.selectbox(key="models_promote_torch").set_value(chosen).run()
    title = f"#### Model card: seeded run (version {chosen}, Custom CNN (PyTorch))"
    # Once in the list of cards, once above "Make this version active".
    assert [m.value for m in at.markdown].count(title) == 2
    assert any("| Glioma | 0.900 | 0.900 | 0.900 | 5 |" in m.value for m in at.markdown)
    assert any("This is the active version." in m.value for m in at.markdown)
    downloads = [e.proto.label for e in at.get("download_button")]
    assert downloads.count("Download the card (Markdown)") == downloads.count("Download the card (HTML)") == 3
    promote(at, chosen)
    assert active_path() == str(checkpoints[1])


def register_keras(folder: Path, accuracy: float, *, activate: bool = False, fingerprint: str = "f" * 64) -> int:
    """A MobileNetV2 version (no brain-MRI check is fitted for it) whose run scored `accuracy`, calibrated."""
    path = folder / f"mobilenet-{accuracy}.keras"
    path.write_bytes(f"a model file scoring {accuracy}".encode())  # hashed, never loaded, by this page
    run_id = seed_run("keras", accuracy, fingerprint=fingerprint)
    with session_scope() as session:
        return register_model_version(
            session=session,
            framework="keras",
            name=path.stem,
            artifact_path=path,
            sha256=file_sha256(path),
            run_id=run_id,
            activate=activate,
        ).id


def test_a_better_model_on_the_same_validation_images_is_promoted_with_one_click(db_url, tmp_path) -> None:
    register_keras(tmp_path, 0.95, activate=True)
    better = register_keras(tmp_path, 0.96)
    at = open_page()
    at.selectbox(key="models_promote_keras").set_value(better).run()
    assert not any("would cost clinicians" in w.value for w in at.warning)
    assert not at.button(key="models_activate_keras").disabled
    at.button(key="models_activate_keras").click().run()
    with session_scope() as session:
        assert get_active_model(session=session, framework="keras").id == better


def test_promoting_a_worse_model_asks_for_a_reason_and_audits_it(db_url, tmp_path) -> None:
    active = register_keras(tmp_path, 0.95, activate=True)
    worse = register_keras(tmp_path, 0.85)
    at = open_page()
    at.selectbox(key="models_promote_keras").set_value(worse).run()
    [warning] = [w.value for w in at.warning if "would cost clinicians" in w.value]
    assert "scores 85.0 % on the validation images where the active version" in shown(warning)
    assert "10.0 points lower" in shown(warning)
    button = at.button(key="models_activate_keras")
    assert button.disabled
    at.text_input(key="models_reason_keras").input("because").run()  # too short
    assert at.button(key="models_activate_keras").disabled
    at.text_input(key="models_reason_keras").input(REASON).run()
    at.button(key="models_activate_keras").click().run()
    assert not at.exception
    with session_scope() as session:
        assert get_active_model(session=session, framework="keras").id == worse
    [entry] = audit_entries("model_promoted")
    assert entry.target == f"model version {worse}" and entry.username == "test-admin"
    assert f"replacing version {active}" in entry.detail and "10.0 points lower" in entry.detail
    assert entry.detail.endswith(f"reason: {REASON}")
