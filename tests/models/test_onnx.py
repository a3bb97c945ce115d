"""The ONNX Runtime path gives the framework's answers: same probabilities (within 1e-4) and the same class on
every sample image, for both shipped models, and the same heatmaps, without importing either framework; a changed
model file is never answered from its old export; the heatmaps leave the shared model as they found it."""

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from models.data.preprocessing import load_rgb
from models.inference.model_meta import file_sha256
from models.inference.onnx_export import export_path
from models.inference.predictor import OnnxPredictor, TorchPredictor
from models.training.backends import backends
from settings import DEFAULT_MODEL_FILES, ROOT, SAMPLE_DIR

IMAGES = sorted(SAMPLE_DIR.glob("*/*.jpg"))


def shipped_copy(framework: str, folder: Path) -> Path:
    """The shipped model and its sidecar, copied, so that its export is made in a folder of the test's own."""
    source = DEFAULT_MODEL_FILES[framework]
    if not source.is_file():
        pytest.skip(f"no shipped {framework} model at {source}")
    for path in (source, Path(str(source) + ".json")):
        if path.is_file():
            shutil.copyfile(path, folder / path.name)
    return folder / source.name


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Callable[[str], Path]:
    """The shipped models copied once for the tests that leave them as they are, so that each export is made once."""
    folder = tmp_path_factory.mktemp("shared-models")

    def copy(framework: str) -> Path:
        path = folder / DEFAULT_MODEL_FILES[framework].name
        return path if path.is_file() else shipped_copy(framework, folder)

    return copy


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [load_rgb(path, size=None) for path in IMAGES]


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.slow
def test_onnx_runtime_gives_the_frameworks_probabilities_on_every_sample_image(framework, images, shared):
    path = shared(framework)
    reference = backends[framework].load_predictor(path)
    onnx = backends[framework].load_predictor(path, backend="onnx")
    assert isinstance(onnx, OnnxPredictor) and export_path(path).is_file()

    expected, got = reference.predict(images), onnx.predict(images)
    assert len(images) == 80 and got.shape == expected.shape
    diff = float(np.abs(got - expected).max())
    assert diff <= 1e-4, diff
    assert (got.argmax(1) == expected.argmax(1)).all()
    # One image at a time (the Diagnose page) answers as the batch does.
    assert np.abs(onnx.predict(images[:1]) - got[:1]).max() <= 1e-6

    if framework == "torch":
        # The out-of-distribution check's features come from the same graph.
        assert isinstance(reference, TorchPredictor)
        features, onnx_features = reference.features(images), onnx.features(images)
        assert np.abs(onnx_features - features).max() <= 1e-3 * np.abs(features).max()
        # A batch job's one run for both gives each as its own call does.
        both_probs, both_features = onnx.predict_with_features(images)
        assert np.abs(both_probs - got).max() <= 1e-6
        assert np.abs(both_features - onnx_features).max() <= 1e-5 * np.abs(features).max()


@pytest.mark.slow
def test_a_model_file_changed_after_its_export_is_exported_again(images, tmp_path):
    import torch

    path = shipped_copy("torch", tmp_path)
    gliomas = images[:8]
    before = backends["torch"].load_predictor(path, backend="onnx").predict(gliomas)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["model"]["head.4.bias"] = checkpoint["model"]["head.4.bias"] + torch.tensor([0.0, 0.0, 0.0, 20.0]).half()
    torch.save(checkpoint, path)

    # A pituitary logit raised by 20: the changed model calls these gliomas pituitary; the old export would not.
    after = backends["torch"].load_predictor(path, backend="onnx").predict(gliomas)
    expected = backends["torch"].load_predictor(path).predict(gliomas)
    assert np.abs(after - expected).max() <= 1e-4
    assert (after.argmax(1) != before.argmax(1)).any()
    assert OnnxPredictor("torch", path, sha256=file_sha256(path)).session.get_modelmeta().custom_metadata_map[
        "source_sha256"
    ] == file_sha256(path)


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.slow
def test_onnx_heatmaps_are_the_frameworks_on_every_sample_image(framework, images, shared):
    path = shared(framework)
    reference = backends[framework].load_predictor(path)
    onnx = backends[framework].load_predictor(path, backend="onnx")
    assert isinstance(onnx, OnnxPredictor)
    worst = []
    # MobileNetV2's occlusion map is 81 runs of the model: every tenth image, two of each class, is enough.
    for rgb in images if framework == "torch" else images[::10]:
        expected, got = reference.heatmap(rgb), onnx.heatmap(rgb)
        assert got.shape == expected.shape == rgb.shape[:2]
        assert expected.max() > 0.5  # a map with something in it, not an empty one
        assert np.abs(got - expected).mean() <= 1e-4
        worst.append(float(np.abs(got - expected).max()))
    if framework == "keras":
        # The occlusion map is a difference of log-odds of probabilities that agree to about 1e-6.
        assert max(worst) <= 1e-4
        assert [o.name for o in onnx.session.get_outputs()] == ["probs"]
        return
    # The two compute the convolutions in other orders (probabilities agree to 1e-6): where a CNN max-pool window
    # holds two values equal but for rounding (a flat background), each may take the other one, which moves
    # that cell's share of the map by one cell. On the rest the maps agree to rounding.
    assert max(worst) <= 0.02
    assert sum(w <= 1e-5 for w in worst) >= 0.95 * len(worst)
    if framework == "torch":
        # Its heatmap graph is apart from the one that predicts, which therefore runs none of its operations.
        assert export_path(path, heatmap=True).is_file()
        assert [o.name for o in onnx.session.get_outputs()] == ["probs", "features"]


HEATMAPS_WITHOUT_FRAMEWORKS = """
import json, sys
import numpy as np
from models.data.preprocessing import load_rgb
from models.inference.model_meta import file_sha256
from models.training.backends import backends
rgb = load_rgb(sys.argv[3], size=None)
p = backends[sys.argv[1]].load_predictor(sys.argv[2], backend="onnx", sha256=file_sha256(sys.argv[2]))
cam = p.heatmap(rgb)
print(json.dumps({
    "cam": cam.tolist(),
    "probs": p.predict([rgb]).tolist(),
    "imported": sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules),
}))
"""


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.slow
def test_a_process_with_its_exports_made_predicts_and_draws_heatmaps_without_the_framework(framework, shared):
    path = shared(framework)
    reference = backends[framework].load_predictor(path)
    prepare = backends[framework].load_predictor(path, backend="onnx")
    prepare.heatmap(load_rgb(IMAGES[0], size=None))  # makes the exports, as start-up does
    out = subprocess.run(
        [sys.executable, "-c", HEATMAPS_WITHOUT_FRAMEWORKS, framework, str(path), str(IMAGES[0])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["imported"] == []
    rgb = load_rgb(IMAGES[0], size=None)
    assert np.abs(np.array(answer["cam"]) - reference.heatmap(rgb)).max() <= 0.02
    assert np.abs(np.array(answer["probs"]) - reference.predict([rgb])).max() <= 1e-4


@pytest.mark.parametrize(
    ("framework", "backend"), [("torch", "framework"), ("keras", "framework"), ("torch", "onnx"), ("keras", "onnx")]
)
@pytest.mark.slow
def test_heatmaps_from_many_sessions_at_once_are_the_ones_each_gets_alone(framework, backend, images, shared):
    path = shared(framework)
    predictor = backends[framework].load_predictor(path, backend=backend)
    picks = images[::10] if framework == "torch" else images[::20]
    alone = [predictor.heatmap(rgb) for rgb in picks]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(predictor.heatmap, picks * 2))
    for i, cam in enumerate(together):
        assert np.abs(cam - alone[i % len(picks)]).max() <= 1e-5
    if isinstance(predictor, TorchPredictor):
        # Nothing left on the shared model: no hook, no gradient in its parameters.
        assert all(not m._forward_hooks and not m._backward_hooks for m in predictor.model.modules())
        assert all(p.grad is None for p in predictor.model.parameters())


@pytest.mark.slow
def test_the_int8_cnn_gives_the_same_class_on_every_sample_image_from_a_quarter_of_the_file(images, shared):
    path = shared("torch")
    exact = backends["torch"].load_predictor(path, backend="onnx").predict(images)
    int8 = backends["torch"].load_predictor(path, backend="onnx", int8=True).predict(images)
    assert (int8.argmax(1) == exact.argmax(1)).all()
    assert np.abs(int8 - exact).max() <= 0.1
    assert export_path(path, int8=True).stat().st_size < export_path(path).stat().st_size / 3
