"""MobileNetV2's weight average: what is scored and shipped is the average, training goes on from the raw weights."""

import json
from pathlib import Path

import numpy as np
import pytest

from models.training.config import make_config
from models.training.keras_loop import SLOTS, WeightAverage
from models.training.run import run_training
from settings import SAMPLE_DIR


@pytest.mark.slow
def test_the_saved_model_holds_the_average_and_the_resume_slot_the_raw_weights(tmp_path: Path) -> None:
    import keras

    cfg = make_config(
        "keras",
        str(SAMPLE_DIR),
        "improved",
        epochs=2,
        batch_size=8,
        max_images_per_class=6,
        image_size=64,
        ema_decay=0.5,
        output_dir=str(tmp_path / "run"),
    )
    run_training(cfg)
    slot = tmp_path / "run" / SLOTS[2 % 2]
    assert json.loads((slot / "state.json").read_text())["epoch"] == 2

    shipped = keras.models.load_model(tmp_path / "run" / "last.keras")
    raw = keras.models.load_model(slot / "model.keras")
    with np.load(slot / WeightAverage.FILE) as saved:
        averages = [saved[f"arr_{i}"] for i in range(len(saved.files) - 1)]
        steps = int(saved["steps"])
    assert steps == 2 * 3  # two epochs of three batches (4 classes x ~5 training images / 8)

    assert len(averages) == len(shipped.trainable_variables) > 100
    for var, avg in zip(shipped.trainable_variables, averages):
        np.testing.assert_array_equal(var.numpy(), avg)
    differ = [
        not np.allclose(a.numpy(), b.numpy()) for a, b in zip(shipped.trainable_variables, raw.trainable_variables)
    ]
    assert sum(differ) > len(differ) // 2  # the average is not the raw weights
