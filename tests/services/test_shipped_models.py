"""The shipped models, through the app's own prediction path, on the labelled sample images.

Nothing else in the suite compares a prediction with the truth: a swapped class order, a broken
preprocessing step or a mangled export would pass everything else. The floors sit a few points under what
the shipped models score here (see SCORES in the README's model table); every class must be found.
"""

from pathlib import Path

import numpy as np
import pytest

from domain import CLASSES
from models.imaging import decode_image
from services.diagnosis import averaged_result, model_result
from services.model_files import file_sha256
from services.predictors import loaded_predictor
from settings import DEFAULT_MODEL_FILES, SAMPLE_DIR

# Accuracy floors on the 80 sample images, per model and for the averaged pair.
FLOORS = {"torch": 0.85, "keras": 0.85, "averaged": 0.88}


@pytest.fixture(scope="module")
def answers() -> dict[str, list[str]]:
    """Each shipped model's class, and the averaged class, for every sample image; and the truth."""
    out: dict[str, list[str]] = {"truth": [], "torch": [], "keras": [], "averaged": []}
    predictors = {fw: loaded_predictor(fw, str(path), file_sha256(path)) for fw, path in DEFAULT_MODEL_FILES.items()}
    for label in CLASSES:
        for path in sorted((SAMPLE_DIR / label).iterdir()):
            data = Path(path).read_bytes()
            decoded = decode_image(data, path.name, max_bytes=len(data) + 1, max_pixels=10**8)
            results = [
                model_result(framework=fw, model_version_id=0, probabilities=p.predict([decoded.rgb])[0])
                for fw, p in predictors.items()
            ]
            out["truth"].append(label)
            for r in results:
                out[r["framework"]].append(r["label"])
            out["averaged"].append(averaged_result(results)[0])
    return out


@pytest.mark.parametrize("which", list(FLOORS))
def test_the_shipped_models_find_each_class_of_the_sample_images(answers, which: str) -> None:
    truth, predicted = np.array(answers["truth"]), np.array(answers[which])
    accuracy = float((truth == predicted).mean())
    recalled = {label for label in CLASSES if ((truth == label) & (predicted == label)).any()}
    assert recalled == set(CLASSES)
    assert accuracy >= FLOORS[which], f"{which}: {accuracy:.3f} on the sample images"
