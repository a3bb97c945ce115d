"""Both models' probabilities for every validation image of the CNN's run, with the labels and the duplicate
group of each image; kept in a cache file for the same model files (`pair-report` and `series-rule`)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.data.preprocessing import load_rgb
from models.data.split import config_validation

CHUNK = 64
FIELDS = ("labels", "groups", "cnn", "mobilenet")


def predict_all(predictor: Any, paths: list[Path]) -> np.ndarray:
    def chunks() -> Iterator[np.ndarray]:
        for i in range(0, len(paths), CHUNK):
            yield predictor.predict([load_rgb(p) for p in paths[i : i + CHUNK]])

    return np.concatenate(list(chunks()))


def validation_probabilities(
    cnn: Any, mobilenet: Any, config: dict[str, Any], data: str | None, cache: Path | None, key: dict[str, str]
) -> dict[str, np.ndarray]:
    """Both predictors' probabilities for every validation image of the CNN's run `config`, its labels and
    duplicate groups; read from `cache` when it was made for the same `key` (the model files' sha256)."""
    if cache is not None and cache.is_file():
        kept = np.load(cache, allow_pickle=False)
        if str(kept["key"]) == json.dumps(key) and all(name in kept for name in FIELDS):
            return {name: kept[name] for name in FIELDS}
    items, groups = config_validation(config, data)
    paths = [it.path for it in items]
    probs = {
        "labels": np.array([it.label for it in items]),
        "groups": np.array(groups),
        "cnn": predict_all(cnn, paths),
        "mobilenet": predict_all(mobilenet, paths),
    }
    if cache is not None:
        np.savez_compressed(cache, key=json.dumps(key), **probs)
    return probs
