"""A run's data: its folder scanned, deduplicated and split, every image loaded once as a model input."""

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from domain import CLASSES, INPUT_SIZE
from models.data.dataset import Item, index_folder, index_items, load_arrays, overlap_with, scan_folder
from models.data.split import cap_items, split_train_val
from models.training.config import TrainConfig
from models.training.run_types import PreparedData


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """Scan, deduplicate and split the data; load everything into memory as uint8 arrays."""
    items = cap_items(scan_folder(cfg.data_dir), cfg.max_images_per_class, cfg.seed)
    index = index_items(cfg.data_dir, items)
    train_idx, val_idx = split_train_val(index, val_fraction=cfg.val_fraction, seed=cfg.seed)
    train_items = [index.items[i] for i in train_idx]
    val_sha = {index.sha256[i] for i in val_idx}
    extra = []
    for path, label in cfg.extra_items:
        p = Path(path)
        # A reviewed scan identical to a validation image would leak it into training.
        if p.is_file() and label in CLASSES and hashlib.sha256(p.read_bytes()).hexdigest() not in val_sha:
            extra.append(Item(p, CLASSES.index(label)))
    x_train, y_train = load_arrays(train_items + extra, INPUT_SIZE, crop=cfg.crop)
    x_val, y_val = load_arrays([index.items[i] for i in val_idx], INPUT_SIZE, crop=cfg.crop)
    summary = {
        "train": len(train_items),
        "extra_reviewed": len(extra),
        "val": len(val_idx),
        "train_per_class": np.bincount(y_train, minlength=len(CLASSES)).tolist(),
        "val_per_class": np.bincount(y_val, minlength=len(CLASSES)).tolist(),
        "duplicates": index.duplicate_report(),
        "unreadable": index.unreadable[:20],
    }
    test = None
    if cfg.test_dir:
        test_index = index_folder(cfg.test_dir)
        x_test, y_test = load_arrays(test_index.items, INPUT_SIZE, crop=cfg.crop)
        test = (x_test, y_test, overlap_with(test_index, index))
        summary["test"] = len(test_index.items)
        summary["test_with_duplicate_in_training"] = int(sum(test[2]))
    split = hashlib.sha256(json.dumps([sorted(index.sha256[i] for i in val_idx), len(y_train)]).encode())
    soft = None
    if cfg.distill_from:
        from models.training.distill import load_targets, student_targets

        targets = load_targets(cfg.distill_from)
        train_sha = [index.sha256[i] for i in train_idx] + [""] * len(extra)
        soft = student_targets(targets, asdict(cfg), train_sha, val_sha)
        summary["distilled"] = {"images": int((~np.isnan(soft[:, 0])).sum()), "teachers": targets.teachers}
    return PreparedData(index, x_train, y_train, x_val, y_val, summary, split.hexdigest(), test, soft)


def prepared_predictor(framework: str, model_path: Path) -> Any:
    """A predictor for arrays that prepare_data already made into model inputs (cropped, resized).

    The app's predictor crops a raw scan itself; on prepared arrays it must not crop them again.
    """
    from models.training.backends import backends

    predictor = backends[framework].load_predictor(model_path)
    predictor.crop = False
    return predictor
