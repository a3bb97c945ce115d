"""MobileNetV2's weight average: what is scored and shipped is the average, training goes on from the raw weights."""

import json
from pathlib import Path

import numpy as np
import pytest

from models.training.keras_loop import SLOTS, WeightAverage
from tests.models.conftest import TINY_KERAS_EPOCHS


@pytest.mark.slow
def test_the_saved_model_holds_the_average_and_the_resume_slot_the_raw_weights(tiny_keras_run: Path) -> None:
    import keras

    slot = tiny_keras_run / SLOTS[TINY_KERAS_EPOCHS % 2]
    assert json.loads((slot / "state.json").read_text())["epoch"] == TINY_KERAS_EPOCHS

    shipped = keras.models.load_model(tiny_keras_run / "last.keras")
    raw = keras.models.load_model(slot / "model.keras")
    with np.load(slot / WeightAverage.FILE) as saved:
        averages = [saved[f"arr_{i}"] for i in range(len(saved.files) - 1)]
        steps = int(saved["steps"])
    assert steps == TINY_KERAS_EPOCHS * 3  # three batches an epoch (4 classes x ~5 training images / 8)

    assert len(averages) == len(shipped.trainable_variables) > 100
    for var, avg in zip(shipped.trainable_variables, averages):
        np.testing.assert_array_equal(var.numpy(), avg)
    differ = [
        not np.allclose(a.numpy(), b.numpy()) for a, b in zip(shipped.trainable_variables, raw.trainable_variables)
    ]
    assert sum(differ) > len(differ) // 2  # the average is not the raw weights
