"""Soft targets from trained models (teachers) for distilling them into the CNN.

Every image on the training side of the split the teachers were trained on is scored through the app's own
prediction path; the teachers' averaged, calibrated probabilities are stored by image sha256. The validation side is
never scored, and every teacher must share the split: a teacher that saw validation images would pass them on.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domain import CLASSES
from models.data.dataset import index_items, scan_folder
from models.data.preprocessing import load_rgb
from models.data.split import cap_items, split_train_val
from models.inference.model_meta import file_sha256
from models.training.backends import backend_for_file

# The split settings a teacher must share with the student; any difference moves images across the split.
SPLIT_KEYS = ("seed", "val_fraction", "max_images_per_class")


@dataclass
class TeacherTargets:
    sha256: list[str]
    probs: np.ndarray  # N x classes, rows sum to 1
    split: dict[str, Any]  # the SPLIT_KEYS values the teachers were trained with
    teachers: list[dict[str, str]]

    def lookup(self) -> dict[str, np.ndarray]:
        return dict(zip(self.sha256, self.probs))


def teacher_split(path: str | Path) -> dict[str, Any]:
    """The split settings a model file's run used; ValueError when the file does not record them."""
    config = backend_for_file(path).model_meta(path).get("config") or {}
    missing = [k for k in ("seed", "val_fraction") if k not in config]
    if missing:
        raise ValueError(f"{path} does not record the split it was trained on ({', '.join(missing)} missing)")
    return {k: config.get(k) for k in SPLIT_KEYS}


def make_targets(
    data_dir: str | Path, models: list[str | Path], *, batch_size: int = 32, threads: int = 1
) -> TeacherTargets:
    """The teachers' averaged probabilities on the training side of the split they were all trained on."""
    if not models:
        raise ValueError("at least one teacher model is needed")
    splits = [teacher_split(m) for m in models]
    if any(s != splits[0] for s in splits[1:]):
        raise ValueError(f"the teachers were trained on different splits: {splits}")
    split = splits[0]
    items = cap_items(scan_folder(data_dir), split["max_images_per_class"], split["seed"])
    index = index_items(data_dir, items)
    train_idx, _ = split_train_val(index, val_fraction=split["val_fraction"], seed=split["seed"])
    total = np.zeros((len(train_idx), len(CLASSES)), dtype=np.float64)
    for model in models:
        predictor = backend_for_file(model).load_predictor(model, backend="onnx", threads=threads)
        for start in range(0, len(train_idx), batch_size):
            chunk = train_idx[start : start + batch_size]
            total[start : start + len(chunk)] += predictor.predict([load_rgb(index.items[i].path) for i in chunk])
    probs = (total / len(models)).astype(np.float32)
    teachers = [{"file": Path(m).name, "sha256": file_sha256(m)} for m in models]
    return TeacherTargets([index.sha256[i] for i in train_idx], probs, split, teachers)


def save_targets(targets: TeacherTargets, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        sha256=np.array(targets.sha256),
        probs=targets.probs,
        meta=np.array(json.dumps({"split": targets.split, "teachers": targets.teachers})),
    )
    tmp.replace(path)


def load_targets(path: str | Path) -> TeacherTargets:
    """The targets saved in path; ValueError with the reason when the file is missing or not such a file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            return TeacherTargets([str(s) for s in f["sha256"]], f["probs"], meta["split"], meta["teachers"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"cannot read teacher targets from {path}: {exc}") from exc


def student_targets(
    targets: TeacherTargets, split: dict[str, Any], train_sha256: list[str], val_sha256: set[str]
) -> np.ndarray:
    """The soft target of each training image (NaN rows where the teachers scored none: the label alone).

    ValueError when the teachers were trained on another split or scored a validation image.
    """
    ours = {k: split.get(k) for k in SPLIT_KEYS}
    if targets.split != ours:
        raise ValueError(
            f"the teacher targets come from models trained on the split {targets.split}, this run uses {ours}: "
            "the teachers would have seen this run's validation images"
        )
    if val_sha256 & set(targets.sha256):
        raise ValueError("the teacher targets score validation images of this run; make them again from its split")
    lookup = targets.lookup()
    out = np.full((len(train_sha256), len(CLASSES)), np.nan, dtype=np.float32)
    for row, sha in enumerate(train_sha256):
        if sha in lookup:
            out[row] = lookup[sha]
    return out
