"""Tiny training runs of both models through a real Celery worker, recorded in a real SQLite file."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.runs import get_run, list_model_versions
from db.schema import TrainingRun
from db.session import session_scope
from models.data.split import config_split
from models.training.config import make_config
from services.model_files import file_sha256
from settings import ROOT, SAMPLE_DIR
from tests.env import environment
from tests.users import make_actor
from worker.submit import cancel_job, submit_training

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder training jobs may read besides the sample; set before the worker starts, so it sees it too."""
    root = tmp_path_factory.mktemp("training-data")
    with environment(ALLOWED_DATA_ROOTS=f"{SAMPLE_DIR}:{root}"):
        yield root


@pytest.fixture(scope="module")
def worker(data_root: Path, module_db_url: str, start_worker: Callable):  # type: ignore[no-untyped-def]
    process = start_worker()
    yield process
    process.stop()


def _run(run_id: int):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        run = get_run(session=session, run_id=run_id)
        epochs = [(e.epoch, e.val_acc, e.lr, e.images_per_s) for e in run.epochs]
        return run, epochs


def test_torch_run_records_each_epoch_and_final_metrics(wait_for_job: Callable) -> None:
    cfg = make_config("torch", str(SAMPLE_DIR), "report", epochs=2, batch_size=16, max_images_per_class=10)
    job_id, run_id = submit_training(cfg, actor=make_actor())
    job = wait_for_job(job_id, timeout=300)
    assert job.status == "succeeded", job.error
    # The split the run trained on: the bar counts its batches of 16 in each of the 2 epochs.
    train, val_items = config_split(cfg.to_dict())
    assert job.progress_current == job.progress_total == 2 * math.ceil(len(train) / 16)
    run, epochs = _run(run_id)
    assert run.status == "succeeded" and run.dataset_fingerprint and run.duration_s > 0
    assert [e[0] for e in epochs] == [1, 2]
    assert all(0 <= acc <= 1 and lr > 0 and ips > 0 for _, acc, lr, ips in epochs)
    val = run.metrics["val"]
    for key in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "per_class",
        "confusion_matrix",
        "inference_ms",
        "model_size_mb",
    ):
        assert key in val
    assert sum(map(sum, val["confusion_matrix"])) == val["count"] == len(val_items)
    assert run.metrics["peak_memory_mb"] > 0
    assert Path(run.artifact_path).is_file() and file_sha256(run.artifact_path) == run.artifact_sha256
    with session_scope() as session:
        versions = [v for v in list_model_versions(session=session, framework="torch") if v.run_id == run_id]
    assert len(versions) == 1 and not versions[0].is_active


def test_keras_run_from_random_init_trains_and_says_so(wait_for_job: Callable) -> None:
    cfg = make_config(
        "keras", str(SAMPLE_DIR), "improved", epochs=1, batch_size=16, max_images_per_class=6, image_size=96, tta=False
    )
    job_id, run_id = submit_training(cfg, actor=make_actor())
    job = wait_for_job(job_id, timeout=400)
    assert job.status == "succeeded", job.error
    run, epochs = _run(run_id)
    assert run.status == "succeeded" and run.pretrained is False
    assert len(epochs) == 1 and run.artifact_path.endswith(".keras")


def test_pretrained_run_without_weights_fails_with_the_fix(wait_for_job: Callable, tmp_path: Path) -> None:
    cfg = make_config(
        "keras", str(SAMPLE_DIR), "report", epochs=1, max_images_per_class=4, weights_path=str(tmp_path / "absent.h5")
    )
    job_id, run_id = submit_training(cfg, actor=make_actor())
    job = wait_for_job(job_id, timeout=300)
    assert job.status == "failed"
    assert "ImageNet weights were not found" in job.error and "MOBILENET_WEIGHTS_PATH" in job.error
    run, epochs = _run(run_id)
    assert run.status == "failed" and "ImageNet weights" in run.error and epochs == []


def test_folder_without_classes_fails_with_a_message(wait_for_job: Callable, data_root: Path) -> None:
    (data_root / "photos" / "holiday").mkdir(parents=True)
    cfg = make_config("torch", str(data_root / "photos"), "report", epochs=1)
    job_id, run_id = submit_training(cfg, actor=make_actor())
    job = wait_for_job(job_id, timeout=120)
    assert job.status == "failed" and "no class subfolders" in job.error
    assert _run(run_id)[0].status == "failed"


def test_cancelled_run_ends_cancelled(wait_for_job: Callable) -> None:
    cfg = make_config("torch", str(SAMPLE_DIR), "report", epochs=50, batch_size=4, max_images_per_class=10)
    job_id, run_id = submit_training(cfg, actor=make_actor())
    wait_for_job(job_id, statuses=("running",), timeout=120)
    assert "will stop" in cancel_job(job_id, actor=make_actor())
    job = wait_for_job(job_id, timeout=180)
    assert job.status == "cancelled"
    run, epochs = _run(run_id)
    assert run.status == "cancelled" and len(epochs) < 50


def test_the_command_line_records_a_run_as_the_worker_does(module_db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "services.training", "--framework", "torch", "--data", str(SAMPLE_DIR)]
    command += ["--epochs", "1", "--batch-size", "16", "--max-images-per-class", "5", "--output-dir", str(out)]
    done = subprocess.run(
        [*command, "--activate", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The split, one line per epoch as it ends, then the best model and its metrics as JSON.
    end_of_log = done.stdout.index("\n{\n") + 1
    printed = json.loads(done.stdout[end_of_log:])
    with session_scope() as session:
        run_id = session.scalar(select(TrainingRun.id).where(TrainingRun.artifact_path == printed["best"]))
    split, epoch = done.stdout[:end_of_log].splitlines()
    assert split.startswith(f"run {run_id}: split {{'train': 16, 'extra_reviewed': 0, 'val': 4, ")
    assert epoch.startswith("{'epoch': 1, ")
    run, epochs = _run(run_id)
    assert run.status == "succeeded" and len(epochs) == 1
    assert Path(run.artifact_path).parent == out and run.params["output_dir"] == str(out)
    assert printed["metrics"]["val"]["accuracy"] == run.metrics["val"]["accuracy"]
    # The new CNN's brain-MRI check is fitted beside it, tied to its file, on the day it is trained.
    from models.evaluation.ood import load_stats, report_path

    ood = run.metrics["ood"]
    assert "error" not in ood, ood
    stats = load_stats(run.artifact_path, run.artifact_sha256)
    validation = json.loads(report_path(run.artifact_path).read_text())["validation"]
    assert stats.threshold == ood["threshold"] > 0
    assert ood["validation_refused"] == validation["rate"] == validation["refused"] / validation["images"]
    assert "DICOM, not MR (pydicom test files)" in ood["families_caught"]
    with session_scope() as session:
        active = [v for v in list_model_versions(session=session, framework="torch") if v.is_active]
        # What the run made beside the model is recorded with its version, as it was made.
        from db.model_files import version_files

        recorded = {row.role: row.sha256 for row in version_files(session=session, version_id=active[0].id)}
    assert [v.run_id for v in active] == [run_id]
    from models.evaluation.ood import stats_path
    from models.inference.onnx_export import export_path
    from services.model_files import file_sha256

    assert recorded["ood_stats"] == file_sha256(stats_path(run.artifact_path))
    assert recorded["onnx"] == file_sha256(export_path(run.artifact_path))


def test_a_training_job_whose_worker_process_is_killed_resumes_from_its_last_epoch(
    worker, wait_for_job: Callable
) -> None:
    cfg = make_config("torch", str(SAMPLE_DIR), "report", epochs=3, batch_size=8, max_images_per_class=20)
    job_id, run_id = submit_training(cfg, actor=make_actor())
    deadline = time.monotonic() + 240
    while not _run(run_id)[1]:
        assert time.monotonic() < deadline, "the run never finished its first epoch"
        time.sleep(0.05)
    # The pool process running the task dies, as on an out-of-memory kill; its parent stays up and the job's
    # message, acknowledged late, is delivered again.
    [child] = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
    os.kill(int(child), signal.SIGKILL)
    job = wait_for_job(job_id, timeout=300)
    assert job.status == "succeeded", job.error
    run, epochs = _run(run_id)
    assert [e[0] for e in epochs] == [1, 2, 3] and run.status == "succeeded"
    assert job.attempts == 2 and job.result["run_id"] == run_id
    assert job.result["resumed_after"] and 1 <= job.result["resumed_after"][0] < 3


def test_a_folder_outside_the_allowed_roots_is_refused_by_the_worker(wait_for_job: Callable, tmp_path: Path) -> None:
    # submit_training does not check folders (the Train form does): the worker checks again.
    cfg = make_config("torch", str(tmp_path), "report", epochs=1)
    job_id, run_id = submit_training(cfg, actor=make_actor())
    job = wait_for_job(job_id, timeout=120)
    assert job.status == "failed" and "outside the allowed data folders" in job.error
    assert _run(run_id)[1] == []


def test_a_link_out_of_the_training_folder_is_refused(wait_for_job: Callable, data_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(next((SAMPLE_DIR / "glioma").iterdir()).read_bytes())
    folder = data_root / "linked"
    for name in ("glioma", "notumor"):
        (folder / name).mkdir(parents=True)
        for src in sorted((SAMPLE_DIR / name).iterdir())[:4]:
            (folder / name / src.name).write_bytes(src.read_bytes())
    (folder / "glioma" / "escape.jpg").symlink_to(outside)
    job_id, _ = submit_training(make_config("torch", str(folder), "report", epochs=1), actor=make_actor())
    job = wait_for_job(job_id, timeout=120)
    assert job.status == "failed" and "leads outside the folder" in job.error and str(outside) in job.error
