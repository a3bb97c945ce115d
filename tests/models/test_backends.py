"""Each framework has one backend, found by its files' suffix, and a run's options are the ones its framework reads."""

from pathlib import Path

import pytest

from domain import Framework
from models.training.backends import backend_for_file, backends
from models.training.config import make_config
from settings import DEFAULT_MODEL_FILES, SAMPLE_DIR


def test_every_framework_has_a_backend_and_its_shipped_file_leads_back_to_it() -> None:
    assert set(backends) == set(Framework)
    for framework, path in DEFAULT_MODEL_FILES.items():
        assert backend_for_file(path) is backends[framework]
        assert path.name.endswith(backends[framework].suffix)
    assert backend_for_file("run/best.PT").framework is Framework.TORCH


def test_a_file_of_no_framework_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match=r"notes\.txt: not a model file \(expected \.pth or \.keras\)"):
        backend_for_file(Path("notes.txt"))


def test_each_framework_reads_options_of_its_own_and_refuses_another_ones_that_would_change_the_run() -> None:
    cnn, mobilenet = backends[Framework.TORCH].options, backends[Framework.KERAS].options
    assert {"mixup_alpha", "init_from", "distill_from", "bf16"} <= cnn
    assert {"pretrained", "fine_tune_epoch", "weights_path"} <= mobilenet
    assert not cnn & mobilenet
    assert make_config("torch", str(SAMPLE_DIR), mixup_alpha=0.2).mixup_alpha == 0.2
    with pytest.raises(ValueError, match="mixup is for the CNN only"):
        make_config("keras", str(SAMPLE_DIR), "improved", mixup_alpha=0.2)
    with pytest.raises(ValueError, match="starting from a checkpoint is for the CNN only"):
        make_config("keras", str(SAMPLE_DIR), "improved", init_from="cnn.pth")


def test_only_the_cnn_offers_the_brain_mri_checks_features_and_an_int8_export() -> None:
    assert [f for f, b in backends.items() if b.ood_features] == [Framework.TORCH]
    assert [f for f, b in backends.items() if b.int8] == [Framework.TORCH]


def test_a_missing_model_file_is_named() -> None:
    with pytest.raises(FileNotFoundError, match="model file .*absent.keras does not exist"):
        backends[Framework.KERAS].load_predictor(Path("absent.keras"))
