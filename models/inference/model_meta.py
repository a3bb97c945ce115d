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
    """tta, config (with crop), temperature, metrics, run...: what a CNN's loaded `checkpoint` and the sidecar say
    (`check` sees the sidecar's bytes first)."""
    meta = {key: checkpoint[key] for key in CHECKPOINT_FIELDS if key in checkpoint} if checkpoint else {}
    return {**meta, **read_sidecar(path, check)}
