"""The Train page's "Check the dataset" step: the report shows, and a warning holds the run until acknowledged."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.jobs import recent_jobs
from db.schema import TrainingRun
from db.session import session_scope
from settings import ROOT, SAMPLE_DIR
from tests.env import environment
from tests.users import make_actor, signed_in
from worker.submit import cancel_job

PAGE = str(ROOT / "views" / "4_Train.py")


@pytest.fixture
def data_root(module_db_url: str, tmp_path: Path) -> Iterator[Path]:
    """An extra allowed data root for the folders a test builds."""
    root = tmp_path / "data-root"
    root.mkdir()
    with environment(ALLOWED_DATA_ROOTS=f"{SAMPLE_DIR}:{root}"):
        yield root


def lopsided(root: Path) -> tuple[Path, Path]:
    """A training folder with one glioma among 60 others and one image twice, and a test folder holding a
    copy of a training image."""
    train, test = root / "train", root / "test"
    for name in ("glioma", "meningioma", "notumor", "pituitary"):
        sources = sorted((SAMPLE_DIR / name).glob("*.jpg"))[: 1 if name == "glioma" else 20]
        (train / name).mkdir(parents=True)
        for source in sources:
            (train / name / source.name).write_bytes(source.read_bytes())
    twin = sorted((train / "notumor").glob("*.jpg"))[0]
    (train / "notumor" / "twin.jpg").write_bytes(twin.read_bytes())
    (test / "notumor").mkdir(parents=True)
    (test / "notumor" / "seen.jpg").write_bytes(twin.read_bytes())
    return train, test


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60)).run()
    assert not at.exception
    return at


def use_folders(at: AppTest, train: Path, test: Path | None = None) -> None:
    at.selectbox(key="train_data_choice").set_value("Another folder…").run()
    at.text_input(key="train_data_path").input(str(train))
    if test is not None:
        at.selectbox(key="train_test_choice").set_value("Another folder…").run()
        at.text_input(key="train_test_path").input(str(test))
    at.run()


def acknowledgment(at: AppTest):  # type: ignore[no-untyped-def]
    boxes = [box for box in at.checkbox if str(box.key).startswith("train_health_ack_")]
    return boxes[0] if boxes else None


def job_count() -> int:
    with session_scope() as session:
        return len(recent_jobs(session=session, limit=1000))


def newest_run() -> TrainingRun:
    with session_scope() as session:
        return session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).first()


def test_checking_the_shipped_sample_shows_its_report_and_asks_nothing(module_db_url: str) -> None:
    at = open_page()
    at.button(key="train_health_check").click().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1  # the class chart; no test folder, no leakage chart
    assert [m.value for m in at.metric][:2] == ["80", "1.00×"]
    assert not at.warning or all("worker" in w.value or "queue" in w.value for w in at.warning)
    assert acknowledgment(at) is None


@pytest.mark.slow
def test_a_folder_outside_the_allowed_roots_cannot_be_checked(data_root: Path, tmp_path: Path) -> None:
    train, _ = lopsided(tmp_path / "elsewhere")
    at = open_page()
    use_folders(at, train)
    at.button(key="train_health_check").click().run()
    assert not at.exception
    assert any("cannot be checked" in e.value and "outside the allowed data folders" in e.value for e in at.error)


@pytest.mark.slow
def test_a_small_class_and_leakage_hold_the_run_until_acknowledged(data_root: Path) -> None:
    train, test = lopsided(data_root)
    at = open_page()
    use_folders(at, train, test)
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_max_images").set_value(2)
    at.button(key="train_health_check").click().run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("glioma has 1 images, 1.6% of the folder") for w in warnings)
    assert any(w.startswith("1 of 1 test images (100.0%)") for w in warnings)
    assert len(at.get("plotly_chart")) == 2  # classes, and leakage per class
    [thumbnails] = at.get("image")  # of the one duplicate group
    assert sorted(image.caption for image in thumbnails.proto.imgs) == sorted(
        f"notumor/{name}" for name in (sorted(p.name for p in (SAMPLE_DIR / "notumor").glob("*.jpg"))[0], "twin.jpg")
    )

    before = job_count()
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert any("dataset check found problems" in e.value for e in at.error)
    assert job_count() == before

    acknowledgment(at).check().run()
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == []
    run = newest_run()
    assert any(f"Run {run.id} is queued" in s.value for s in at.success)
    assert run.params["dataset_health"]["acknowledged_by"] == "test-admin"
    assert len(run.params["dataset_health"]["warnings"]) == 2
    cancel_job(run.job_id, actor=make_actor())
