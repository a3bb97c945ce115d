"""`python -m models train-all`: both models trained and exported with their run records, the best MobileNetV2
size kept, which say what they trained on; a GPU asked for where there is none, or missing ImageNet weights,
are refused in words before anything is trained."""

import json
from pathlib import Path

import pytest

from models.cli import main as models_command
from models.training.devices import torch_device
from models.training.pipeline import best_run
from settings import SAMPLE_DIR
from tests.env import environment


@pytest.mark.slow
def test_both_models_are_trained_and_exported_with_their_records(tmp_path: Path) -> None:
    out = tmp_path / "all"
    argv = ["train-all", "--data", str(SAMPLE_DIR), "--out", str(out), "--epochs", "1"]
    argv += ["--max-images-per-class", "5", "--keras-sizes", "32", "--no-reports", "--threads", "1"]
    assert models_command(argv) == 0
    record = json.loads((out / "train-all.json").read_text())
    steps = ["train torch", "train keras-32", "export torch", "export keras-32"]
    assert [s["step"] for s in record["steps"]] == steps
    shipped = json.loads((out / "weights" / "mobilenetv2_default.keras.json").read_text())
    assert shipped["config"]["image_size"] == 32
    assert json.loads((out / "weights" / "cnn_default.pth.json").read_text())["run"]["framework"] == "torch"
    cnn_run = json.loads((out / "runs" / "torch" / "run.json").read_text())
    assert cnn_run["machine"]["accelerator"] == {"device": "cpu", "name": "CPU"}


def test_the_run_kept_is_the_best_on_validation_and_the_first_of_equals(tmp_path: Path) -> None:
    def run(name: str, accuracy: float) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({"metrics": {"val": {"accuracy": accuracy}}}))
        return folder

    small, middle, large = run("keras-128", 0.91), run("keras-160", 0.94), run("keras-224", 0.94)
    assert best_run([small, middle, large]) == middle
    assert best_run([large, small]) == large
    assert best_run([small]) == small


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
