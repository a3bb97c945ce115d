"""The seeded, stratified train/validation split of a labelled folder, duplicate groups kept on one side."""

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from domain import CLASSES
from models.data.dataset import DatasetError, DatasetIndex, Item, index_items, scan_folder


def split_train_val(index: DatasetIndex, *, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified, seeded split of item positions that keeps every duplicate group on one side."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be between 0 and 1")
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(index.groups):
        members[g].append(i)
    by_label: dict[int, list[int]] = defaultdict(list)
    for g, idx in members.items():
        majority = Counter(index.items[i].label for i in idx).most_common(1)[0][0]
        by_label[majority].append(g)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_label):
        groups = sorted(by_label[label])
        rng.shuffle(groups)
        target = round(val_fraction * sum(len(members[g]) for g in groups))
        taken = 0
        for g in groups:
            # A group that would overshoot the target goes to training: validation keeps its share.
            if taken + len(members[g]) <= target:
                val.extend(members[g])
                taken += len(members[g])
            else:
                train.extend(members[g])
    if not train or not val:
        raise DatasetError("too few distinct images to carve out both a training and a validation set")
    return sorted(train), sorted(val)


def cap_items(items: list[Item], per_class: int | None, seed: int) -> list[Item]:
    """At most `per_class` items of each class, drawn with the seed (quick runs); all of them without a cap."""
    if not per_class:
        return items
    rng = random.Random(seed)
    kept: list[Item] = []
    for label in range(len(CLASSES)):
        of_class = [it for it in items if it.label == label]
        rng.shuffle(of_class)
        kept.extend(sorted(of_class[:per_class], key=lambda it: str(it.path)))
    return kept


def _config_index(cfg: dict[str, Any], data_dir: str | Path | None) -> tuple[DatasetIndex, list[int], list[int]]:
    root = data_dir or cfg["data_dir"]
    index = index_items(root, cap_items(scan_folder(root), cfg.get("max_images_per_class"), cfg.get("seed", 42)))
    train_idx, val_idx = split_train_val(index, val_fraction=cfg.get("val_fraction", 0.15), seed=cfg.get("seed", 42))
    return index, train_idx, val_idx


def config_split(cfg: dict[str, Any], data_dir: str | Path | None = None) -> tuple[list[Item], list[Item]]:
    """The training and validation items of a run's split, rebuilt from its config (folder, cap per class, seed,
    validation share) with duplicate groups kept on one side as in training; data_dir where the folder moved."""
    index, train_idx, val_idx = _config_index(cfg, data_dir)
    return [index.items[i] for i in train_idx], [index.items[i] for i in val_idx]


def config_validation(cfg: dict[str, Any], data_dir: str | Path | None = None) -> tuple[list[Item], list[int]]:
    """The validation items of a run's split (as config_split), and the duplicate group of each: images of one
    group are copies or near copies of each other."""
    index, _, val_idx = _config_index(cfg, data_dir)
    return [index.items[i] for i in val_idx], [index.groups[i] for i in val_idx]
