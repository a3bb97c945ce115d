"""A training job whose artifact disk fills up (a real full tmpfs): failed in words, its saved epoch kept whole."""

from pathlib import Path

import pytest
import torch

from db.jobs import create_job, get_job
from db.runs import get_run
from db.session import session_scope
from models.training.config import make_config
from models.training.run import resumable_config, run_training
from models.training.run_types import TrainHooks
from models.training.torch_loop import load_state
from services.training import create_recorded_run
from settings import SAMPLE_DIR, get_settings
from tests.disks import fill, tmpfs
from worker.jobs import Reporter, run_job
from worker.tasks import train
from worker.training import run_training_job

# Room for one epoch's files of the tiny run (best, last and state: about 250 MB) and a new state beside them.
DISK_SIZE = "512m"


@pytest.fixture
def artifact_disk(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    with tmpfs(tmp_path / "artifacts", DISK_SIZE) as folder:
        monkeypatch.setenv("ARTIFACT_DIR", str(folder))
        get_settings.cache_clear()
        yield folder
        get_settings.cache_clear()


@pytest.mark.slow
def test_a_run_that_fills_its_disk_fails_in_words_and_continues_from_its_last_whole_epoch(
    artifact_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config("torch", str(SAMPLE_DIR), "report", epochs=2, batch_size=8, max_images_per_class=6)
    with session_scope() as session:
        job_id = create_job(session=session, kind="train", params={"framework": "torch"}).id
    run_id = create_recorded_run(cfg=cfg, job_id=job_id)
    run_dir = artifact_disk / "runs" / str(run_id)
    # The disk fills up once the first epoch is saved, while the second trains: its checkpoint finds no room.
    filled: list[Path] = []
    real_progress = Reporter.progress

    def progress(self: Reporter, current: int, total: int, message: str | None = None) -> None:
        if message and message.startswith("epoch 2/") and not filled:
            filled.append(fill(artifact_disk))
        real_progress(self, current, total, message)

    monkeypatch.setattr(Reporter, "progress", progress)
    run_job(train, job_id, run_training_job)

    assert filled, "the run never reached its second epoch"
    with session_scope() as session:
        job, run = get_job(session=session, job_id=job_id), get_run(session=session, run_id=run_id)
    words = f"There is no space left under {run_dir}: the run stopped without keeping the file it was writing"
    assert job.status == "failed" and job.error.startswith(words), job.error
    assert run.status == "failed" and words in run.error, run.error
    # No partial file; what the first epoch saved is whole and is what a resume loads.
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pth", "last.pth", "state.pth"]
    assert load_state(run_dir)["epoch"] == 1
    for name in ("best.pth", "last.pth"):
        assert torch.load(run_dir / name, map_location="cpu", weights_only=True)["epoch"] == 1

    filled[0].unlink()
    resumed: list[dict] = []
    run_training(resumable_config(run_dir), TrainHooks(on_epoch=resumed.append), resume=True)
    assert [row["epoch"] for row in resumed] == [2]
    assert load_state(run_dir)["epoch"] == 2
