"""`python -m services.predictors` makes a model file's ONNX exports beside it, as the Docker image's build does for
the shipped models, and refuses a file that is no model."""

import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from models.inference.onnx_export import export_path
from services.model_files import file_sha256
from services.predictors import main
from settings import DEFAULT_MODEL_FILES


@pytest.mark.slow
def test_the_command_makes_the_cnns_exports_beside_it_tagged_with_its_digest(tmp_path: Path, capsys) -> None:
    source = DEFAULT_MODEL_FILES["torch"]
    if not source.is_file():
        pytest.skip(f"no shipped CNN at {source}")
    model = tmp_path / source.name
    shutil.copyfile(source, model)

    assert main([str(model)]) == 0
    assert "ONNX export of its predictions and heatmaps ready" in capsys.readouterr().out
    for path, outputs in ((export_path(model), ["probs", "features"]), (export_path(model, heatmap=True), ["cam"])):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == outputs
        assert session.get_modelmeta().custom_metadata_map["source_sha256"] == file_sha256(model)


def test_the_command_refuses_a_file_that_is_no_model(tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    with pytest.raises(SystemExit) as stop:
        main([str(notes)])
    assert stop.value.code == 2
    assert "a model file ends in .pth (the CNN) or .keras (MobileNetV2)" in capsys.readouterr().err
    assert not export_path(notes).exists()


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [("missing.pth", None, "no such file"), ("broken.pth", b"not a checkpoint", "no ONNX export made: ")],
)
def test_the_command_says_which_model_file_it_could_not_export(tmp_path: Path, capsys, name, content, said) -> None:
    model = tmp_path / name
    if content is not None:
        model.write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        main([str(model)])
    assert stop.value.code == 2
    assert f"{model}: {said}" in capsys.readouterr().err
    assert not export_path(model).exists()
