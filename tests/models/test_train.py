"""In-process training behaviour: reproducibility, the evaluate command, heatmaps, presets."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.data.preprocessing import load_rgb
from models.training.backends import backends
from models.training.config import make_config
from models.training.run import run_training
from models.training.run_types import TrainHooks
from settings import ROOT, SAMPLE_DIR


def tiny_config(output_dir: Path | str, *, per_class: int = 6, **overrides):  # type: ignore[no-untyped-def]
    """A one-epoch CNN run of the report's recipe on a few sample images per class."""
    return make_config(
        "torch",
        str(SAMPLE_DIR),
        "report",
        epochs=1,
        batch_size=16,
        max_images_per_class=per_class,
        output_dir=str(output_dir),
        **overrides,
    )


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cnn")
    return run_training(tiny_config(out)).best_path


@pytest.mark.slow
def test_same_config_gives_the_same_first_epoch(tmp_path: Path) -> None:
    rows: list[list[dict]] = [[], []]
    for k in range(2):
        run_training(tiny_config(tmp_path / str(k), per_class=5), TrainHooks(on_epoch=rows[k].append))
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    assert [rows[0][0][k] for k in keys] == pytest.approx([rows[1][0][k] for k in keys], rel=1e-5)


@pytest.mark.slow
def test_evaluate_command_prints_the_json_fields(tiny_cnn: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "models", "evaluate", "--model", str(tiny_cnn), "--data", str(SAMPLE_DIR)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["count"] == 80
    assert set(report["per_class"]) == {"glioma", "meningioma", "notumor", "pituitary"}
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == 80 and matrix.sum(axis=1).tolist() == [20, 20, 20, 20]
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 80) and "f1" in report


def test_evaluate_command_refuses_a_folder_without_classes(tiny_cnn: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "models", "evaluate", "--model", str(tiny_cnn), "--data", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "no class subfolders" in out.stderr


def test_heatmap_matches_the_image_shape(tiny_cnn: Path) -> None:
    predictor = backends["torch"].load_predictor(tiny_cnn)
    rgb = load_rgb(next((SAMPLE_DIR / "glioma").iterdir()), size=None)[:200, :180]
    cam = predictor.heatmap(rgb)
    assert cam.shape == (200, 180) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    probs = predictor.predict([rgb, rgb])
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_config_validation_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        make_config("torch", str(SAMPLE_DIR), epochs=0)
    with pytest.raises(ValueError, match="224x224"):
        make_config("torch", str(SAMPLE_DIR), image_size=128)
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("torch", str(SAMPLE_DIR), "fancy")


def test_training_stores_a_fitted_temperature_that_predictions_use(tiny_cnn: Path) -> None:
    from models.inference.calibration import apply_temperature

    record = json.loads((tiny_cnn.parent / "run.json").read_text())
    calibration = record["metrics"]["val"]["calibration"]
    assert set(calibration) >= {"temperature", "ece_before", "ece_after", "nll_before", "nll_after"}
    predictor = backends["torch"].load_predictor(tiny_cnn)
    assert predictor.temperature == pytest.approx(calibration["temperature"]) and predictor.temperature != 1.0
    rgb = load_rgb(next((SAMPLE_DIR / "notumor").iterdir()))
    calibrated = predictor.predict([rgb])
    predictor.temperature = 1.0
    raw = predictor.predict([rgb])
    assert np.allclose(calibrated, apply_temperature(raw, calibration["temperature"]), atol=1e-6)


@pytest.mark.slow
def test_a_warm_restart_starts_from_the_checkpoints_weights(tiny_cnn: Path, tmp_path: Path) -> None:
    import torch

    from models.nets.cnn import load_checkpoint
    from models.training.torch_loop import initial_weights

    cfg = tiny_config(tmp_path, init_from=str(tiny_cnn))
    start, _ = load_checkpoint(tiny_cnn)
    loaded = initial_weights(cfg)
    for name, value in start.state_dict().items():
        assert torch.equal(loaded[name], value), name
    # One epoch from there moves the weights, and the record says where it started.
    result = run_training(cfg)
    after, ckpt = load_checkpoint(result.best_path)
    assert ckpt["config"]["init_from"] == str(tiny_cnn)
    assert not torch.equal(after.state_dict()["head.1.weight"], start.state_dict()["head.1.weight"])


def test_a_warm_restart_refuses_a_checkpoint_from_another_split(tiny_cnn: Path, tmp_path: Path) -> None:
    from models.training.torch_loop import initial_weights

    for change in ({"seed": 7}, {"max_images_per_class": 5}):
        overrides = {"epochs": 1, "max_images_per_class": 6, "init_from": str(tiny_cnn), **change}
        cfg = make_config("torch", str(SAMPLE_DIR), "report", output_dir=str(tmp_path), **overrides)
        with pytest.raises(ValueError, match="validation images"):
            initial_weights(cfg)
    with pytest.raises(ValueError, match="no such file"):
        initial_weights(make_config("torch", str(SAMPLE_DIR), init_from=str(tmp_path / "absent.pth")))
    with pytest.raises(ValueError, match="CNN only"):
        make_config("keras", str(SAMPLE_DIR), init_from=str(tiny_cnn))


def test_the_distillation_loss_is_zero_only_where_the_student_matches_its_teachers() -> None:
    import torch

    from models.training.torch_loop import distillation_loss

    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.0, 0.0, 3.0, -2.0]])
    for t in (1.0, 2.0, 4.0):
        same = (logits / t).softmax(1)
        assert float(distillation_loss(logits, same, t)) == pytest.approx(0.0, abs=1e-6)
        other = same.flip(1)
        assert float(distillation_loss(logits, other, t)) > 0.1
    # Hinton's T² keeps the gradient's scale: the softer targets do not shrink it to nothing.
    target = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    grads = []
    for t in (1.0, 4.0):
        x = torch.zeros(1, 4, requires_grad=True)
        distillation_loss(x, (target.log() / t).softmax(1), t).backward()
        grads.append(float(x.grad.abs().sum()))
    assert grads[1] > 0.25 * grads[0]


@pytest.mark.slow
def test_a_cnn_learns_from_teacher_targets_of_its_own_split_and_refuses_others(tiny_cnn: Path, tmp_path: Path) -> None:
    from models.training.distill import load_targets, make_targets, save_targets, student_targets

    targets = make_targets(SAMPLE_DIR, [tiny_cnn])
    save_targets(targets, tmp_path / "teacher.npz")
    loaded = load_targets(tmp_path / "teacher.npz")
    assert loaded.sha256 == targets.sha256 and np.allclose(loaded.probs, targets.probs)
    assert loaded.split == {"seed": 42, "val_fraction": 0.15, "max_images_per_class": 6}
    assert np.allclose(loaded.probs.sum(1), 1, atol=1e-5)
    # Only the training side was scored: the teacher's own predictions on those images, nothing else.
    predictor = backends["torch"].load_predictor(tiny_cnn)
    from models.data.split import config_split
    from models.inference.model_meta import file_sha256

    train, val = config_split(loaded.split | {"data_dir": str(SAMPLE_DIR)})
    assert sorted(loaded.sha256) == sorted(file_sha256(it.path) for it in train)
    first = next(it for it in train if file_sha256(it.path) == loaded.sha256[0])
    assert np.allclose(predictor.predict([load_rgb(first.path)])[0], loaded.probs[0], atol=1e-4)

    cfg = tiny_config(tmp_path / "student", distill_from=str(tmp_path / "teacher.npz"))
    result = run_training(cfg)
    assert result.metrics["split"]["distilled"] == {"images": len(train), "teachers": loaded.teachers}

    split = {"seed": 42, "val_fraction": 0.15, "max_images_per_class": 6}
    with pytest.raises(ValueError, match="validation images"):
        student_targets(loaded, {**split, "seed": 7}, loaded.sha256, set())
    with pytest.raises(ValueError, match="validation images"):
        student_targets(loaded, split, loaded.sha256, {loaded.sha256[0]})
    soft = student_targets(loaded, split, [loaded.sha256[1], "not-scored"], set())
    assert np.allclose(soft[0], loaded.probs[1]) and np.isnan(soft[1]).all()
    with pytest.raises(ValueError, match="CNN only"):
        make_config("keras", str(SAMPLE_DIR), distill_from=str(tmp_path / "teacher.npz"))


@pytest.mark.slow
def test_mixup_blends_each_image_with_a_partner_and_keeps_its_own_image_dominant(tmp_path: Path) -> None:
    import torch

    from models.training.torch_loop import mixup

    gen = torch.Generator().manual_seed(0)
    x = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    torch.manual_seed(0)
    blended, partner, lam = mixup(x, 0.4, gen)
    assert 0.5 <= lam <= 1.0 and sorted(partner.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(blended, lam * x + (1 - lam) * x[partner])
    # A tiny run with mixup trains.
    rows: list[dict] = []
    run_training(tiny_config(tmp_path, per_class=5, mixup_alpha=0.4), TrainHooks(on_epoch=rows.append))
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
    with pytest.raises(ValueError, match="CNN only"):
        make_config("keras", str(SAMPLE_DIR), mixup_alpha=0.2)
