"""Loaded models, once per process: the app's sessions and a worker's jobs share them."""

from functools import lru_cache

from models.predictor import Predictor, load_predictor
from models.threads import cap_threads
from settings import get_settings

# The active model of each framework and a chosen older version or two.
MAX_LOADED = 4


@lru_cache(maxsize=MAX_LOADED)
def loaded_predictor(framework: str, artifact_path: str, sha256: str) -> Predictor:
    """The model file loaded once per process; the sha256 in the key means a replaced file is loaded again."""
    settings = get_settings()
    # The app and the workers share the cores: the frameworks get their capped pools before first use.
    cap_threads(settings.torch_threads, settings.tf_threads)
    return load_predictor(framework, artifact_path)
