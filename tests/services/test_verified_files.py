"""Answers only from verified files: the sha256 of each file a model's answers depend on besides the model file (its
ONNX exports, sidecar, out-of-distribution statistics and report, the pair report) is recorded with the version when
the file is made, and checked when it is opened. A file that is not the one recorded refuses the model, in words,
on the Diagnose page, in a batch job and on the Models page."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from db.model_files import version_files
from db.session import session_scope
from domain import UserError
from models.evaluation.ood import load_stats, report_path, save_stats, stats_path
from models.inference.model_meta import sidecar_path
from models.inference.onnx_export import export, export_path
from services.diagnosis import pair_rule
from services.model_files import ModelFileProblem, file_sha256, main, register_default_models
from services.predictors import loaded_predictor
from settings import DEFAULT_MODEL_FILES, ROOT
from tests.entries import shown
from tests.env import environment
from tests.users import signed_in

SHIPPED = DEFAULT_MODEL_FILES["torch"]


@pytest.fixture
def shipped_cnn(db_url: str, tmp_path: Path) -> Iterator[tuple[Path, str, int]]:
    """A copy of the shipped CNN with every file shipped beside it, registered as start-up registers it:
    (model file, its sha256, version id)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for source in (
        SHIPPED,
        sidecar_path(SHIPPED),
        stats_path(SHIPPED),
        report_path(SHIPPED),
        SHIPPED.parent / "pair.json",
    ):
        shutil.copyfile(source, folder / source.name)
    model = folder / SHIPPED.name
    with session_scope() as session:
        [version] = register_default_models(session=session, files={"torch": model})
        version_id = version.id
    loaded_predictor.cache_clear()
    yield model, file_sha256(model), version_id
    loaded_predictor.cache_clear()


def recorded(version_id: int) -> dict[str, str]:
    with session_scope() as session:
        return {row.role: row.sha256 for row in version_files(session=session, version_id=version_id)}


def load(model: Path, sha256: str):  # type: ignore[no-untyped-def]
    loaded_predictor.cache_clear()
    return loaded_predictor("torch", str(model), sha256)


def test_the_files_shipped_beside_a_model_are_recorded_when_it_is_registered(shipped_cnn) -> None:
    model, _, version_id = shipped_cnn
    assert recorded(version_id) == {
        "sidecar": file_sha256(sidecar_path(model)),
        "ood_stats": file_sha256(stats_path(model)),
        "ood_report": file_sha256(report_path(model)),
        "pair_report": file_sha256(model.parent / "pair.json"),
    }


def test_a_swapped_onnx_export_refuses_the_model_in_words(shipped_cnn, tmp_path: Path) -> None:
    """The audit's finding: an export of another network, tagged with the registered file's digest, made every
    answer "notumor" while the model file itself still matched."""
    import torch

    from models.nets.cnn import TumorCNN, save_checkpoint

    model, sha256, version_id = shipped_cnn
    load(model, sha256)  # the first load makes the export, and records it
    assert "onnx" in recorded(version_id)  # the heatmap graph is opened, and recorded, with the first heatmap
    torch.manual_seed(0)
    other = save_checkpoint(tmp_path / "other.pth", TumorCNN(), extra={})
    export_path(model).write_bytes(export("torch", other, sha256))  # it passes the export's own tag check
    with pytest.raises(
        ModelFileProblem, match=r"its ONNX export .*cnn_default.pth.onnx is not the one recorded when it"
    ):
        load(model, sha256)
    from services.batch import load_models

    with pytest.raises(UserError, match=rf"Model cnn_default \(version {version_id}\) cannot be used: its ONNX export"):
        load_models([version_id])


def test_a_missing_export_is_made_again_from_the_model_file_and_recorded(shipped_cnn) -> None:
    model, sha256, version_id = shipped_cnn
    load(model, sha256)
    first = recorded(version_id)["onnx"]
    export_path(model).unlink()
    assert load(model, sha256).predict([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 4)
    assert recorded(version_id)["onnx"] == file_sha256(export_path(model)) and first


@pytest.mark.parametrize("which", ["sidecar", "statistics", "statistics gone", "pair report"])
def test_a_changed_file_beside_the_model_refuses_it_in_words(shipped_cnn, which: str) -> None:
    model, sha256, _ = shipped_cnn
    with environment(INFERENCE_BACKEND="framework"):
        assert load(model, sha256).predict([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 4)
        if which == "sidecar":
            side = json.loads(sidecar_path(model).read_text())
            sidecar_path(model).write_text(json.dumps({**side, "temperature": 0.05}))  # every answer made sure
            said = "its sidecar"
        elif which == "statistics":
            stats = load_stats(model, sha256)
            save_stats(type(stats)(**{**stats.__dict__, "threshold": 1e30}), stats_path(model))  # every image passes
            said = "its out-of-distribution statistics"
        elif which == "statistics gone":
            stats_path(model).unlink()  # the check would be off
            said = "its out-of-distribution statistics .* was recorded when it was made but is missing"
        else:
            pair = json.loads((model.parent / "pair.json").read_text())
            pair["answer"]["rule"]["temperature"] = 0.05
            (model.parent / "pair.json").write_text(json.dumps(pair))
            said = "its pair report"
        with pytest.raises(ModelFileProblem, match=said):
            load(model, sha256)


def test_a_pair_report_that_is_not_the_one_recorded_gives_no_rule(shipped_cnn) -> None:
    model, cnn_sha256, _ = shipped_cnn
    report = model.parent / "pair.json"
    pair = json.loads(report.read_text())
    mobilenet_sha256 = pair["models"]["mobilenet"]["sha256"]
    pair_rule.cache_clear()
    rule = pair_rule(cnn_sha256, mobilenet_sha256, report)
    assert rule is not None and rule.combination.as_dict() == pair["answer"]["rule"]
    assert rule.threshold == pair["review"]["chosen"]["threshold"]
    pair["answer"]["rule"]["temperature"] = 0.05
    report.write_text(json.dumps(pair))
    pair_rule.cache_clear()
    assert pair_rule(cnn_sha256, mobilenet_sha256, report) is None


def test_the_record_command_accepts_the_files_as_they_are_now(shipped_cnn, capsys) -> None:
    model, sha256, version_id = shipped_cnn
    side = json.loads(sidecar_path(model).read_text())
    sidecar_path(model).write_text(json.dumps({**side, "temperature": 0.9}))  # fitted again, by hand
    with environment(INFERENCE_BACKEND="framework"):
        with pytest.raises(ModelFileProblem, match="its sidecar"):
            load(model, sha256)
        assert main(["record", str(version_id)]) == 0
        assert "recorded sidecar, out-of-distribution statistics" in capsys.readouterr().out
        assert load(model, sha256).temperature == 0.9


def models_page() -> AppTest:
    at = signed_in(AppTest.from_file(str(ROOT / "views" / "6_Models.py"), default_timeout=60)).run()
    assert not at.exception
    return at


@pytest.mark.slow
def test_the_models_page_checks_every_recorded_file(shipped_cnn) -> None:
    model, _, _ = shipped_cnn
    at = models_page()
    assert any(
        "The 4 file(s) its answers depend on (sidecar, out-of-distribution statistics" in c.value for c in at.caption
    )
    assert not at.error
    (model.parent / "pair.json").write_text("{}")
    at = models_page()
    assert [shown(e.value) for e in at.error] == [
        f"This version is refused wherever it would answer: its pair report {model.parent / 'pair.json'} is not the "
        "one recorded when it was made."
    ]


def test_the_diagnose_page_refuses_a_model_whose_sidecar_changed(shipped_cnn) -> None:
    model, _, _ = shipped_cnn
    side = json.loads(sidecar_path(model).read_text())
    sidecar_path(model).write_text(json.dumps({**side, "tta": False}))
    with environment(INFERENCE_BACKEND="framework"):
        at = signed_in(AppTest.from_file(str(ROOT / "views" / "1_Diagnose.py"), default_timeout=60)).run()
    assert not at.exception
    [error] = [shown(e.value) for e in at.error]
    assert (
        f"The active Custom CNN (PyTorch) model (cnn_default) is not used: its sidecar {sidecar_path(model)}" in error
    )
    assert not at.file_uploader  # no model left to answer
