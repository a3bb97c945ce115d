"""A worker started as `make run` starts it (scripts/run.sh: its queues, its name, the concurrency and prefetch of
the settings): a batch job is not held up by a long training run, and when the whole worker is killed (main
process and pool) mid-batch and mid-training, a new worker finishes both jobs, each file and epoch done once."""

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.jobs import get_job
from db.runs import get_run, register_model_version
from db.schema import BatchItem, Job, Prediction, utcnow
from db.session import session_scope
from models.training.config import make_config
from services.batch_input import folder_source
from settings import ROOT, SAMPLE_DIR, get_settings
from tests.env import environment
from tests.users import make_actor
from worker.celery_app import celery_app
from worker.recovery import orphaned_after_s
from worker.submit import cancel_job, submit_batch, submit_training

pytestmark = pytest.mark.slow


def make_run_worker_arguments() -> list[str]:
    """The `celery worker` arguments of scripts/run.sh up to its `-n`, so this worker is the one `make run` starts:
    its queues, and the settings' concurrency and prefetch."""
    line = next(
        x for x in (ROOT / "scripts" / "run.sh").read_text().splitlines() if "celery -A" in x and " worker " in x
    )
    arguments = line.split("celery", 1)[1].split()
    return arguments[: arguments.index("-n")]


def kill_whole_worker(worker) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL to the worker's main process and pool at once, as an out-of-memory kill of its service would."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=30)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("fault-data")
    # Heartbeats every 5 s: a killed worker's jobs are taken for lost after 10 s, not 30.
    with environment(ALLOWED_DATA_ROOTS=f"{SAMPLE_DIR}:{root}", HEARTBEAT_INTERVAL_S="5"):
        yield root


@pytest.fixture(scope="module")
def cnn_version(data_root: Path, module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A tiny CNN really trained (one epoch, four images a class), registered as the active torch model."""
    from models.training.run import run_training
    from services.model_files import file_sha256

    out = tmp_path_factory.mktemp("tiny-cnn")
    cfg = make_config("torch", str(SAMPLE_DIR), epochs=1, batch_size=16, max_images_per_class=4, output_dir=str(out))
    path = run_training(cfg).best_path
    with session_scope() as session:
        return register_model_version(
            session=session,
            framework="torch",
            name="tiny-cnn",
            artifact_path=path,
            sha256=file_sha256(path),
            activate=True,
        ).id


def batch_folder(root: Path, copies: int) -> Path:
    for copy in range(copies):
        for path in sorted(SAMPLE_DIR.rglob("*.jpg")):
            target = root / f"copy{copy}" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return root


def job_row(job_id: int) -> Job:
    with session_scope() as session:
        return get_job(session=session, job_id=job_id)


def epochs_of(run_id: int) -> list[int]:
    with session_scope() as session:
        return [e.epoch for e in get_run(session=session, run_id=run_id).epochs]


def test_a_batch_finishes_while_a_long_training_run_holds_the_other_process(
    cnn_version: int, data_root: Path, start_worker: Callable, wait_for_job
) -> None:
    assert "-Q" in make_run_worker_arguments() and celery_app.conf.worker_prefetch_multiplier == 1
    assert celery_app.conf.worker_concurrency == 2
    worker = start_worker(arguments=make_run_worker_arguments())
    long_run = make_config("torch", str(SAMPLE_DIR), "report", epochs=50, batch_size=4, max_images_per_class=10)
    train_id, run_id = submit_training(long_run, actor=make_actor())
    wait_for_job(train_id, statuses=("running",), timeout=120)
    folder = batch_folder(data_root / "beside-training", 1)
    batch_id = submit_batch(
        source=folder_source(str(folder), settings=get_settings()), patient_mode="none", actor=make_actor()
    )
    batch = wait_for_job(batch_id, timeout=240)
    training = job_row(train_id)
    assert batch.status == "succeeded" and batch.result["done"] == 80, batch.error
    assert training.status == "running" and len(epochs_of(run_id)) < 50
    assert "will stop" in cancel_job(train_id, actor=make_actor())
    assert wait_for_job(train_id, timeout=180).status == "cancelled"
    worker.stop()


def test_a_whole_worker_killed_mid_batch_and_mid_training_is_replaced_and_both_jobs_finish_once(
    cnn_version: int, data_root: Path, start_worker: Callable, wait_for_job
) -> None:
    name = f"killed-{os.getpid()}@{socket.gethostname()}"
    worker = start_worker(arguments=make_run_worker_arguments(), name=name)
    cfg = make_config("torch", str(SAMPLE_DIR), "report", epochs=4, batch_size=8, max_images_per_class=20)
    train_id, run_id = submit_training(cfg, actor=make_actor())
    deadline = time.monotonic() + 300
    while not epochs_of(run_id):
        assert time.monotonic() < deadline, "the run never finished its first epoch"
        time.sleep(0.2)
    folder = batch_folder(data_root / "killed", 4)
    batch_id = submit_batch(
        source=folder_source(str(folder), settings=get_settings()),
        patient_mode="single",
        patient_mrn="P-KILLED",
        actor=make_actor(),
    )
    while (batch := wait_for_job(batch_id, statuses=("running",), timeout=120)).progress_current < 32:
        time.sleep(0.1)
    assert batch.progress_current < 320 and job_row(train_id).status == "running"
    kill_whole_worker(worker)
    # Redis keeps both messages unacknowledged for two days: the jobs wait for a new worker to take them back,
    # once they have missed two heartbeats.
    while utcnow() - max(job_row(i).heartbeat_at for i in (batch_id, train_id)) < timedelta(seconds=orphaned_after_s()):
        time.sleep(0.5)
    assert job_row(batch_id).status == job_row(train_id).status == "running"
    again = start_worker(arguments=make_run_worker_arguments(), name=name)  # its name, as `make run` starts it
    batch, training = wait_for_job(batch_id, timeout=300), wait_for_job(train_id, timeout=400)
    assert batch.status == "succeeded" and training.status == "succeeded", (batch.error, training.error)
    with session_scope() as session:
        items = list(session.scalars(select(BatchItem.rel_path).where(BatchItem.job_id == batch_id)))
        predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == batch_id))
        run = get_run(session=session, run_id=run_id)
    assert len(items) == len(set(items)) == 320 and predictions == 80
    assert batch.attempts == 2 and batch.result["done_before"] >= 32
    assert epochs_of(run_id) == [1, 2, 3, 4] and run.status == "succeeded"
    assert training.attempts == 2 and 1 <= training.result["resumed_after"][0] < 4
    again.stop()
