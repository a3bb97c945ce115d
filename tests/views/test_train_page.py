"""The Train page: the form refuses bad values before anything is queued; a real tiny run shows live and ends."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.jobs import create_job, recent_jobs, set_progress
from db.runs import create_run, start_run
from db.schema import TrainingRun
from db.session import session_scope
from domain import TrainingStep
from models.training.config import PRESETS
from settings import ROOT, SAMPLE_DIR
from tests.env import environment
from tests.seed_runs import seed_run
from tests.users import make_actor, signed_in
from views.train.live_runs import WATCH_KEY
from worker.submit import cancel_job

PAGE = str(ROOT / "views" / "4_Train.py")


@pytest.fixture
def data_root(module_db_url: str, tmp_path: Path) -> Iterator[Path]:
    """An extra allowed data root, empty: tests put folders (and links) in it."""
    root = tmp_path / "data-root"
    root.mkdir()
    with environment(ALLOWED_DATA_ROOTS=f"{SAMPLE_DIR}:{root}"):
        yield root


@pytest.fixture
def no_weights(module_db_url: str, tmp_path: Path) -> Iterator[None]:
    """No MobileNetV2 ImageNet weights anywhere the trainer looks (configured path, ~/.keras)."""
    with environment(HOME=str(tmp_path), MOBILENET_WEIGHTS_PATH=str(tmp_path / "absent.h5")):
        yield


def job_count() -> int:
    with session_scope() as session:
        return len(recent_jobs(session=session, limit=1000))


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60)).run()
    assert not at.exception
    return at


def use_folder(at: AppTest, path: Path) -> None:
    at.selectbox(key="train_data_choice").set_value("Another folder…").run()
    at.text_input(key="train_data_path").input(str(path))


def submit(at: AppTest) -> list[str]:
    """Click "Start training"; the page's error messages."""
    at.button(key="train_submit").click().run()
    assert not at.exception
    return [error.value for error in at.error]


def class_folders(root: Path) -> Path:
    """A labelled folder: one real sample image per class."""
    for name in ("glioma", "meningioma", "notumor", "pituitary"):
        (root / name).mkdir(parents=True)
        source = next((SAMPLE_DIR / name).glob("*.jpg"))
        (root / name / source.name).write_bytes(source.read_bytes())
    return root


@pytest.mark.slow
def test_choosing_a_preset_fills_the_fields_with_its_values(module_db_url: str) -> None:
    at = open_page()
    assert (at.number_input(key="train_epochs").value, at.number_input(key="train_lr").value) == (20, 1e-3)
    at.selectbox(key="train_preset").set_value("improved").run()
    improved = PRESETS[("torch", "improved")]
    assert (at.number_input(key="train_epochs").value, at.number_input(key="train_lr").value) == (
        improved["epochs"],
        improved["lr"],
    )
    at.selectbox(key="train_framework").set_value("keras").run()
    assert at.checkbox(key="train_pretrained").value is False  # without ImageNet weights, from random init
    assert at.number_input(key="train_fine_tune_epoch").value == 1


def test_zero_epochs_is_refused_and_nothing_is_queued(module_db_url: str) -> None:
    before = job_count()
    at = open_page()
    at.number_input(key="train_epochs").set_value(0)
    assert submit(at) == ["Epochs must be at least 1"]
    assert job_count() == before


@pytest.mark.slow
def test_every_invalid_field_is_reported_at_once(data_root: Path) -> None:
    (data_root / "holiday-photos" / "beach").mkdir(parents=True)
    before = job_count()
    at = open_page()
    use_folder(at, data_root / "holiday-photos")
    at.number_input(key="train_epochs").set_value(0)
    at.number_input(key="train_batch_size").set_value(0)
    at.number_input(key="train_lr").set_value(0.0)
    folder, epochs, batch, lr = submit(at)
    assert folder.startswith("Dataset folder:") and "has no class subfolders" in folder
    assert (epochs, batch, lr) == (
        "Epochs must be at least 1",
        "Batch size must be between 1 and 1024",
        "Learning rate must be in (0, 1]",
    )
    assert job_count() == before


def test_after_the_last_epoch_the_panel_names_the_step_under_way(module_db_url: str) -> None:
    with session_scope() as session:
        job = create_job(session=session, kind="train", params={}, submitted_by=make_actor().user_id)
        job.status = "running"
        run = create_run(
            session=session, framework="torch", preset="report", params={"epochs": 2}, dataset_path="/d", job_id=job.id
        )
        start_run(session=session, run_id=run.id)
        set_progress(session=session, job_id=job.id, current=8, total=8, message=TrainingStep.FITTING_CHECK.message)
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Now"] == "Fitting the check" and "Time left" not in metrics
    assert at.get("progress")[0].proto.text == TrainingStep.FITTING_CHECK.message
    with session_scope() as session:
        session.get(TrainingRun, run.id).status = "cancelled"


def test_a_finished_run_below_the_floor_says_it_is_not_usable_where_success_would_show(module_db_url: str) -> None:
    good, poor = seed_run("torch", 0.93), seed_run("torch", 0.55)
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60))
    at.session_state[WATCH_KEY] = [poor, good]
    at.run()
    assert not at.exception
    assert [s.value for s in at.success if s.value.startswith("Finished")] == ["Finished: validation accuracy 93.00%."]
    [poor_verdict] = [e.value for e in at.error if e.value.startswith("Finished")]
    assert poor_verdict.startswith("Finished — not usable: its validation accuracy, 55.0 %, is below the 80.0 %")


@pytest.mark.slow
def test_a_folder_outside_the_allowed_roots_is_refused(data_root: Path, tmp_path: Path) -> None:
    outside = class_folders(tmp_path / "elsewhere")
    (data_root / "link").symlink_to(outside)
    before = job_count()
    at = open_page()
    for folder in (outside, data_root / "link"):
        use_folder(at, folder)
        [error] = submit(at)
        assert f"{folder} is outside the allowed data folders" in error
    assert job_count() == before


@pytest.mark.slow
def test_a_folder_without_class_subfolders_is_refused(data_root: Path) -> None:
    (data_root / "holiday-photos" / "beach").mkdir(parents=True)
    before = job_count()
    at = open_page()
    use_folder(at, data_root / "holiday-photos")
    [error] = submit(at)
    assert "has no class subfolders" in error and "glioma" in error
    assert job_count() == before


@pytest.mark.usefixtures("no_weights")
@pytest.mark.slow
def test_pretrained_mobilenet_without_weights_is_refused_with_the_way_to_provide_them() -> None:
    before = job_count()
    at = open_page()
    at.selectbox(key="train_framework").set_value("keras").run()
    assert any("No ImageNet weights on this machine" in note.value for note in at.info)
    assert at.checkbox(key="train_pretrained").value is True  # the report's recipe starts from ImageNet
    [error] = submit(at)
    assert "ImageNet weights were not found" in error and "MOBILENET_WEIGHTS_PATH" in error
    assert job_count() == before


def fill_tiny_run(at: AppTest, *, epochs: int, cap: int, batch_size: int) -> None:
    assert at.selectbox(key="train_data_choice").value == str(SAMPLE_DIR.resolve())
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_batch_size").set_value(batch_size)
    at.number_input(key="train_max_images").set_value(cap)


def listed(at: AppTest, run_id: int) -> bool:
    """Whether the live view shows the run: in the queued table, or in a panel of its own."""
    queued = [frame.value for frame in at.dataframe if "queued at (UTC)" in frame.value.columns]
    return any(run_id in list(frame["run"]) for frame in queued) or any(
        f"Run {run_id} ·" in block.value for block in at.markdown
    )


def epochs_of(run_id: int) -> list[int]:
    with session_scope() as session:
        return [e.epoch for e in session.get(TrainingRun, run_id).epochs]


def run_params(run_id: int) -> dict:
    with session_scope() as session:
        return dict(session.get(TrainingRun, run_id).params)


def newest_run():  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).first()


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_a_tiny_run_submitted_from_the_page_shows_live_and_ends_with_its_epochs(wait_for_job: Callable) -> None:
    at = open_page()
    fill_tiny_run(at, epochs=1, cap=4, batch_size=16)
    at.checkbox(key="train_use_reviewed").check()
    assert submit(at) == []
    run = newest_run()
    assert run.params["epochs"] == 1 and run.params["max_images_per_class"] == 4 and run.params["use_reviewed"]
    assert any(f"Run {run.id} is queued" in note.value for note in at.success)
    assert listed(at, run.id)  # at once, queued or already started
    job = wait_for_job(run.job_id, timeout=300)
    assert job.status == "succeeded", job.error
    # After the last epoch the job named each step in turn; exporting the model is the last.
    assert job.message == TrainingStep.EXPORTING.message
    at.run()
    assert not at.exception
    # One epoch on 16 images: its result says it is no model for clinicians, where a success would show.
    [verdict] = [e.value for e in at.error if e.value.startswith("Finished")]
    assert verdict.startswith("Finished — not usable: its validation accuracy") and "MIN_PROMOTE_ACCURACY" in verdict
    assert not at.success or not any("Finished" in s.value for s in at.success)
    [epochs] = [frame.value for frame in at.dataframe if "val_acc" in frame.value.columns]
    assert list(epochs["epoch"]) == [1]


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_a_running_run_is_cancelled_from_its_panel(wait_for_job: Callable) -> None:
    at = open_page()
    fill_tiny_run(at, epochs=50, cap=4, batch_size=2)
    assert submit(at) == []
    run = newest_run()
    wait_for_job(run.job_id, statuses=("running",), timeout=120)
    at.run()
    at.button(key=f"train_cancel_{run.id}").click().run()
    assert not at.exception
    assert wait_for_job(run.job_id, timeout=180).status == "cancelled"
    at.run()
    assert any("Cancelled." in note.value for note in at.warning)


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_a_cancelled_run_continues_from_its_last_epoch(wait_for_job: Callable) -> None:
    at = open_page()
    fill_tiny_run(at, epochs=50, cap=4, batch_size=2)
    assert submit(at) == []
    run = newest_run()
    deadline = time.monotonic() + 180
    while not epochs_of(run.id):
        assert time.monotonic() < deadline, "the run never finished an epoch"
        time.sleep(0.1)
    cancel_job(run.job_id, actor=make_actor())
    assert wait_for_job(run.job_id, timeout=180).status == "cancelled"
    done = len(epochs_of(run.id))
    at.run()
    at.button(key=f"train_continue_{run.id}").click().run()
    assert not at.exception
    assert any(f"Job {run.job_id} is queued again." in note.value.replace("\\", "") for note in at.info)
    wait_for_job(run.job_id, statuses=("running",), timeout=120)
    deadline = time.monotonic() + 180
    while not (resumed := run_params(run.id).get("resumed_after")):
        assert time.monotonic() < deadline, "the run did not say it resumed"
        time.sleep(0.1)
    assert resumed[0] >= done >= 1
    cancel_job(run.job_id, actor=make_actor())
    wait_for_job(run.job_id, timeout=180)
    assert [e for e in epochs_of(run.id)] == list(range(1, len(epochs_of(run.id)) + 1))  # each epoch once
