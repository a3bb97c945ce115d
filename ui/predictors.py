"""The active models, loaded once per process, and their cached answers for an image."""

from dataclasses import dataclass

import numpy as np
import streamlit as st

from db.runs import get_active_model
from db.session import session_scope
from domain import FRAMEWORKS, framework_label
from models.predictor import Predictor, load_predictor
from models.threads import cap_threads
from settings import get_settings


@dataclass(frozen=True)
class ActiveModel:
    framework: str
    version_id: int
    name: str
    artifact_path: str
    sha256: str

    @property
    def label(self) -> str:
        return framework_label(self.framework)


def active_models() -> list[ActiveModel]:
    """The model clinicians use for each framework that has one, in FRAMEWORKS order."""
    with session_scope() as session:
        versions = [get_active_model(session=session, framework=fw) for fw in FRAMEWORKS]
        return [ActiveModel(v.framework, v.id, v.name, v.artifact_path, v.sha256) for v in versions if v is not None]


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def get_predictor(framework: str, artifact_path: str, sha256: str) -> Predictor:
    """One predictor per model file and process; the sha256 keys the cache so a replaced file is reloaded."""
    settings = get_settings()
    # The app shares the cores with the workers: the frameworks get their capped pools before first use.
    cap_threads(settings.torch_threads, settings.tf_threads)
    return load_predictor(framework, artifact_path)


def predictor_for(model: ActiveModel) -> Predictor:
    return get_predictor(model.framework, model.artifact_path, model.sha256)


@st.cache_data(max_entries=512, show_spinner=False)
def probabilities(
    framework: str, artifact_path: str, model_sha256: str, image_sha256: str, _rgb: np.ndarray
) -> np.ndarray:
    """Class probabilities of one image (CLASSES order), remembered per model and image."""
    return get_predictor(framework, artifact_path, model_sha256).predict([_rgb])[0]


@st.cache_data(max_entries=128, show_spinner=False)
def gradcam(framework: str, artifact_path: str, model_sha256: str, image_sha256: str, _rgb: np.ndarray) -> np.ndarray:
    """Grad-CAM heatmap (HxW in [0, 1]) of one image, remembered per model and image."""
    return get_predictor(framework, artifact_path, model_sha256).gradcam(_rgb)
