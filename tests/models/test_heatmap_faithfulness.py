"""The heatmaps point at what the shipped models actually use: hiding the hottest tenth of an image lowers the
predicted class's probability more than hiding the coldest tenth (an occlusion check)."""

import numpy as np
import pytest

from domain import CLASSES
from models.data.preprocessing import load_rgb
from models.training.backends import backends
from settings import DEFAULT_MODEL_FILES, SAMPLE_DIR

# Three images of each class: a heatmap must hold for every class, not only the first folder's.
IMAGES = [path for label in CLASSES for path in sorted((SAMPLE_DIR / label).glob("*.jpg"))[:3]]


def occlusion_gap(predictor, rgb: np.ndarray) -> float:
    """Probability lost by hiding the hottest 10 % minus the probability lost by hiding the coldest 10 %."""
    probs = predictor.predict([rgb])[0]
    label = int(probs.argmax())
    cam = predictor.heatmap(rgb)
    hot, cold = rgb.copy(), rgb.copy()
    hot[cam >= np.quantile(cam, 0.9)] = 0
    cold[cam <= np.quantile(cam, 0.1)] = 0
    after_hot, after_cold = predictor.predict([hot, cold])[:, label]
    return float((probs[label] - after_hot) - (probs[label] - after_cold))


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.slow
def test_the_hottest_region_matters_more_than_the_coldest(framework):
    path = DEFAULT_MODEL_FILES[framework]
    if not path.is_file():
        pytest.skip(f"no shipped {framework} model at {path}")
    predictor = backends[framework].load_predictor(path, backend="onnx")  # the app's path
    gaps = np.array([occlusion_gap(predictor, load_rgb(p, size=None)) for p in IMAGES])
    assert gaps.mean() > 0.05 and (gaps > 0).mean() >= 0.5, gaps.round(3).tolist()
