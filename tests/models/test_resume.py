"""A run stopped after an epoch and resumed in a new call goes on exactly as the uninterrupted run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.training.config import make_config
from models.training.run import resumable_config, run_training
from models.training.run_types import TrainHooks, TrainingCancelled
from models.training.torch_loop import recalibrate_bn
from settings import SAMPLE_DIR
from tests.models.conftest import tiny_keras_config

KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def _stop_after_first_epoch(cfg) -> None:  # type: ignore[no-untyped-def]
    done: list[dict] = []
    with pytest.raises(TrainingCancelled):
        run_training(cfg, TrainHooks(on_epoch=done.append, should_cancel=lambda: len(done) >= 1))
    assert [row["epoch"] for row in done] == [1]


def _resumed_in_parts(cfg, whole: Path) -> None:  # type: ignore[no-untyped-def]
    """Run `cfg` to its first epoch, resume it to the end in a new call, and compare it with the run in `whole`."""
    parts_dir = Path(cfg.output_dir)
    _stop_after_first_epoch(cfg)
    assert not (parts_dir / "run.json").exists()
    resumed_rows: list[dict] = []
    run_training(resumable_config(parts_dir), TrainHooks(on_epoch=resumed_rows.append), resume=True)
    parts = json.loads((parts_dir / "run.json").read_text())["epochs"]
    uninterrupted = json.loads((whole / "run.json").read_text())["epochs"]

    assert [row["epoch"] for row in resumed_rows] == [2, 3]  # epoch 1 is not reported twice
    assert [row["epoch"] for row in parts] == [1, 2, 3]
    for a, b in zip(uninterrupted, parts, strict=True):
        assert [a[k] for k in KEYS] == pytest.approx([b[k] for k in KEYS], rel=1e-6)


@pytest.mark.slow
def test_a_resumed_cnn_run_repeats_the_uninterrupted_one(tmp_path: Path) -> None:
    def cfg(name: str):  # type: ignore[no-untyped-def]
        return make_config(
            "torch",
            str(SAMPLE_DIR),
            "improved",
            epochs=3,
            batch_size=8,
            max_images_per_class=6,
            output_dir=str(tmp_path / name),
        )

    run_training(cfg("whole"))
    _resumed_in_parts(cfg("parts"), tmp_path / "whole")


@pytest.mark.slow
def test_a_resumed_mobilenet_run_repeats_the_uninterrupted_one(tiny_keras_run: Path, tmp_path: Path) -> None:
    _resumed_in_parts(tiny_keras_config(tmp_path / "parts"), tiny_keras_run)


def test_resume_refuses_a_folder_without_a_saved_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="resumable"):
        resumable_config(tmp_path)


@pytest.mark.slow
def test_resume_refuses_a_changed_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("glioma", "meningioma", "notumor", "pituitary"):
        (data / name).mkdir(parents=True)
        for src in sorted((SAMPLE_DIR / name).iterdir())[:5]:
            (data / name / src.name).write_bytes(src.read_bytes())
    cfg = make_config("torch", str(data), "report", epochs=2, batch_size=8, output_dir=str(tmp_path / "run"))
    _stop_after_first_epoch(cfg)
    for src in sorted((SAMPLE_DIR / "glioma").iterdir())[5:9]:
        (data / "glioma" / src.name).write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match="no longer gives the split"):
        run_training(resumable_config(tmp_path / "run"), resume=True)


def test_batchnorm_recalibration_matches_the_clean_images_statistics() -> None:
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    model[1].running_mean.fill_(100.0)  # statistics gathered on other inputs
    recalibrate_bn(model, images, batch_size=20)  # equal batches: the cumulative mean is exact
    with torch.no_grad():
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
        conv = model[0](x)
    expected = conv.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected, atol=1e-4)
    assert model[1].momentum == 0.1 and not model.training
