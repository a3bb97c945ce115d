"""What a saved model says about itself, for both frameworks: one reader and one writer.

Every model file may have a sidecar `<file>.json` (a Keras model's preprocessing flags and temperature, a
shipped model's run record). A CNN checkpoint also carries the same fields inside itself, so that it is
whole on its own; where both say something, the sidecar wins.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domain import Framework

CHECKPOINT_FIELDS = ("epoch", "config", "metrics", "tta", "normalize", "temperature")

# Called with a file a model's answers depend on (an export, the sidecar, the brain-MRI check's statistics), as
# (path, bytes, made: whether this process just wrote them), before the bytes are used; raises to refuse them.
OpenCheck = Callable[[Path, bytes, bool], None]


def file_sha256(path: str | Path) -> str:
    """The file's sha256, read in chunks: what a model version is registered and checked by."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def read_sidecar(path: str | Path, check: OpenCheck | None = None) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    data = side.read_bytes()
    if check is not None:
        check(side, data, False)
    return json.loads(data)


def write_sidecar(path: str | Path, meta: dict[str, Any]) -> None:
    side = sidecar_path(path)
    tmp = side.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=float))
    tmp.replace(side)


def model_meta(
    path: str | Path, *, checkpoint: dict[str, Any] | None = None, check: OpenCheck | None = None
) -> dict[str, Any]:
    """tta, config (with crop), temperature, metrics, run...: what the model file and its sidecar say.

    A CNN's checkpoint is read from the file unless the caller already loaded it.
    """
    meta: dict[str, Any] = {}
    if Framework.of_file(path) is Framework.TORCH:
        if checkpoint is None:
            import torch

            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        meta = {key: checkpoint[key] for key in CHECKPOINT_FIELDS if key in checkpoint}
    return {**meta, **read_sidecar(path, check)}
