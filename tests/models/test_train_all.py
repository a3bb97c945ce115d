"""`python -m models train-all`: both models trained, the better MobileNetV2 size kept, both exported with their
run records, which say what they trained on; a GPU asked for where there is none is refused in words."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.training.devices import torch_device
from settings import ROOT, SAMPLE_DIR
from tests.env import environment


def models_command(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_both_models_are_trained_the_better_size_kept_and_exported_with_their_records(tmp_path: Path) -> None:
    out = tmp_path / "all"
    done = models_command(
        "train-all",
        "--data",
        str(SAMPLE_DIR),
        "--out",
        str(out),
        "--preset",
        "improved",
        "--epochs",
        "1",
        "--max-images-per-class",
        "8",
        "--keras-sizes",
        "64",
        "96",
        "--no-reports",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "train-all.json").read_text())
    assert [s["step"] for s in record["steps"]][:3] == ["train torch", "train keras-64", "train keras-96"]
    runs = {name: json.loads((out / "runs" / name / "run.json").read_text()) for name in ("keras-64", "keras-96")}
    best = max(runs, key=lambda name: runs[name]["metrics"]["val"]["accuracy"])
    assert f"export {best}" in [s["step"] for s in record["steps"]]
    shipped = json.loads((out / "weights" / "mobilenetv2_default.keras.json").read_text())
    assert shipped["config"]["image_size"] == runs[best]["config"]["image_size"]
    assert (out / "weights" / "cnn_default.pth").is_file()
    cnn_run = json.loads((out / "runs" / "torch" / "run.json").read_text())
    assert cnn_run["machine"]["accelerator"] == {"device": "cpu", "name": "CPU"}


def test_missing_imagenet_weights_stop_the_command_before_any_training(tmp_path: Path) -> None:
    done = models_command(
        "train-all",
        "--data",
        str(SAMPLE_DIR),
        "--out",
        str(tmp_path),
        "--preset",
        "report",
        "--no-reports",
        env={"MOBILENET_WEIGHTS_PATH": str(tmp_path / "none.h5")},
    )
    assert done.returncode == 2 and "ImageNet weights were not found" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_gpu_asked_for_where_there_is_none_is_refused_in_words(tmp_path: Path) -> None:
    if torch_device() != "cpu":
        pytest.skip("this machine has a CUDA GPU")
    with environment(TRAIN_DEVICE="cuda"), pytest.raises(ValueError, match="PyTorch sees no CUDA GPU"):
        torch_device()
    with environment(TRAIN_DEVICE="tpu"), pytest.raises(ValueError, match="use auto, cpu or cuda"):
        torch_device()
    done = models_command(
        "train-all", "--data", str(SAMPLE_DIR), "--out", str(tmp_path), "--no-reports", env={"TRAIN_DEVICE": "cuda"}
    )
    assert done.returncode == 2 and "sees no CUDA GPU" in done.stderr
    assert not (tmp_path / "train-all.json").exists()
