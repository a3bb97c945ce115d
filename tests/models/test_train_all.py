"""`python -m models train-all`: both models trained, the better MobileNetV2 size kept, both exported with their
run records, which say what they trained on; a GPU asked for where there is none, or missing ImageNet weights,
are refused in words before anything is trained."""

import json
from pathlib import Path

import pytest

from models.cli import main as models_command
from models.training.devices import torch_device
from settings import SAMPLE_DIR
from tests.env import environment


@pytest.mark.slow
def test_both_models_are_trained_the_better_size_kept_and_exported_with_their_records(tmp_path: Path) -> None:
    out = tmp_path / "all"
    argv = ["train-all", "--data", str(SAMPLE_DIR), "--out", str(out), "--epochs", "1"]
    argv += ["--max-images-per-class", "5", "--keras-sizes", "32", "48", "--no-reports", "--threads", "1"]
    assert models_command(argv) == 0
    record = json.loads((out / "train-all.json").read_text())
    assert [s["step"] for s in record["steps"]][:3] == ["train torch", "train keras-32", "train keras-48"]
    runs = {name: json.loads((out / "runs" / name / "run.json").read_text()) for name in ("keras-32", "keras-48")}
    best = max(runs, key=lambda name: runs[name]["metrics"]["val"]["accuracy"])  # the first of equals
    assert [s["step"] for s in record["steps"]][3:] == ["export torch", f"export {best}"]
    shipped = json.loads((out / "weights" / "mobilenetv2_default.keras.json").read_text())
    assert shipped["config"]["image_size"] == runs[best]["config"]["image_size"]
    assert (out / "weights" / "cnn_default.pth").is_file()
    cnn_run = json.loads((out / "runs" / "torch" / "run.json").read_text())
    assert cnn_run["machine"]["accelerator"] == {"device": "cpu", "name": "CPU"}


def test_a_gpu_asked_for_where_there_is_none_is_refused_in_words(tmp_path: Path, capsys) -> None:
    if torch_device() != "cpu":
        pytest.skip("this machine has a CUDA GPU")
    with environment(TRAIN_DEVICE="tpu"), pytest.raises(ValueError, match="use auto, cpu or cuda"):
        torch_device()
    with environment(TRAIN_DEVICE="cuda"):
        assert models_command(["train-all", "--data", str(SAMPLE_DIR), "--out", str(tmp_path), "--no-reports"]) == 2
    assert "PyTorch sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_missing_imagenet_weights_stop_the_command_before_any_training(tmp_path: Path, capsys) -> None:
    argv = ["train-all", "--data", str(SAMPLE_DIR), "--out", str(tmp_path), "--preset", "report", "--no-reports"]
    with environment(MOBILENET_WEIGHTS_PATH=str(tmp_path / "none.h5")):
        assert models_command(argv) == 2
    assert "ImageNet weights were not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
