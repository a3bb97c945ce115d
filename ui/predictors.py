"""The active models, loaded once per process, and their cached answers and heatmaps for an image."""

from collections.abc import Sequence

import numpy as np

from models.data.imaging import analysis_rgb
from models.inference.predictor import Predictor
from services.ood import OodGate, OodVerdict, ood_gate
from services.predictors import loaded_predictor
from services.uploads import ActiveModel
from ui.image_cache import image_cache, read_only


def get_predictor(framework: str, artifact_path: str, sha256: str) -> Predictor:
    """The model loaded once per process, shared with every session (services.predictors)."""
    return loaded_predictor(framework, artifact_path, sha256)


def predictor_for(model: ActiveModel) -> Predictor:
    return get_predictor(model.framework, model.artifact_path, model.sha256)


# What an answer (a few numbers, or a verdict) counts against the image cache's byte budget.
ANSWER_BYTES = 256


def probabilities_many(
    framework: str, artifact_path: str, model_sha256: str, images: Sequence[tuple[str, np.ndarray]]
) -> list[np.ndarray]:
    """Class probabilities (CLASSES order) of each (image sha256, RGB) pair, remembered per model and image;
    the images not seen before are predicted as one batch."""
    keys = [("probabilities", framework, artifact_path, model_sha256, sha) for sha, _ in images]

    def make(missing: list[int]) -> list[np.ndarray]:
        predictor = get_predictor(framework, artifact_path, model_sha256)
        return list(read_only(predictor.predict([images[i][1] for i in missing])))

    return image_cache().get_many_or_make(keys, make, lambda _: ANSWER_BYTES)


def heatmap(framework: str, artifact_path: str, model_sha256: str, image_sha256: str, rgb: np.ndarray) -> np.ndarray:
    """The heatmap (HxW in [0, 1]) of one image at analysis size, remembered per model and image within the
    image cache's budget."""

    def make() -> np.ndarray:
        return read_only(get_predictor(framework, artifact_path, model_sha256).heatmap(analysis_rgb(rgb)))

    key = ("heatmap", framework, artifact_path, model_sha256, image_sha256)
    return image_cache().get_or_make(key, make, lambda cam: cam.nbytes)


def ood_verdicts(artifact_path: str, model_sha256: str, images: Sequence[tuple[str, np.ndarray]]) -> list[OodVerdict]:
    """Whether each (image sha256, RGB) pair is a brain MRI slice, by the check fitted for this CNN file,
    remembered per image; the images not seen before are checked in one forward pass."""
    keys = [("ood", artifact_path, model_sha256, sha) for sha, _ in images]

    def make(missing: list[int]) -> list[OodVerdict]:
        return ood_gate(artifact_path, model_sha256).check([images[i][1] for i in missing])

    return image_cache().get_many_or_make(keys, make, lambda _: ANSWER_BYTES)


class CachedAnswers:
    """The check's verdicts and the models' probabilities as services.uploads.analyse asks for them, kept in the
    image cache: a redraw, or another session with the same image, asks the models nothing again."""

    def verdicts(self, gate: OodGate, images: Sequence[tuple[str, np.ndarray]]) -> list[OodVerdict]:
        return ood_verdicts(gate.artifact_path, gate.sha256, images)

    def probabilities(self, model: ActiveModel, images: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        return probabilities_many(model.framework, model.artifact_path, model.sha256, images)
