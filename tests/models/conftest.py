"""One tiny MobileNetV2 run shared by the tests that read a finished Keras run (the resume and weight-average
tests): three epochs on six images a class at 64 px, with a weight average that moves fast (decay 0.5). Their
modules share an xdist group, so the run is trained once per test session."""

from pathlib import Path

import pytest

from models.training.config import make_config
from settings import SAMPLE_DIR

TINY_KERAS_EPOCHS = 3
TINY_KERAS_BATCH = 8


def tiny_keras_config(output_dir: Path):  # type: ignore[no-untyped-def]
    return make_config(
        "keras",
        str(SAMPLE_DIR),
        "improved",
        epochs=TINY_KERAS_EPOCHS,
        batch_size=TINY_KERAS_BATCH,
        max_images_per_class=6,
        image_size=64,
        ema_decay=0.5,
        output_dir=str(output_dir),
    )


@pytest.fixture(scope="session")
def tiny_keras_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the whole run, trained once."""
    from models.training.run import run_training

    folder = tmp_path_factory.mktemp("tiny-keras") / "whole"
    run_training(tiny_keras_config(folder))
    return folder
