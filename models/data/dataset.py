"""Labelled image folders: scanned, hashed and indexed with their duplicate groups, and loaded as arrays."""

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from domain import CLASSES
from models.data.duplicates import (
    HASH_BLOCK,
    NEAR_DUPLICATE_BITS,
    group_duplicates,
    hamming_matrix_rows,
    perceptual_hash,
)
from models.data.preprocessing import load_rgb, model_input

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class DatasetError(ValueError):
    """A folder that cannot be used as labelled data; the message is meant for a person."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: int


@dataclass
class DatasetIndex:
    """A scanned folder: its items, per-item hashes and the duplicate groups among them."""

    root: Path
    items: list[Item]
    sha256: list[str]
    phash: np.ndarray  # N x 4 uint64: a 256-bit perceptual hash per item
    groups: list[int]  # duplicate-group id per item
    unreadable: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """A hash of the labelled content, independent of file names and order."""
        digest = hashlib.sha256()
        for line in sorted(f"{CLASSES[it.label]}:{sha}" for it, sha in zip(self.items, self.sha256)):
            digest.update(line.encode())
        return digest.hexdigest()

    def duplicate_report(self) -> dict[str, int]:
        sizes = Counter(self.groups)
        in_groups = sum(n for n in sizes.values() if n > 1)
        conflicts = 0
        labels_by_group: dict[int, set[int]] = defaultdict(set)
        for it, g in zip(self.items, self.groups):
            labels_by_group[g].add(it.label)
        conflicts = sum(1 for labels in labels_by_group.values() if len(labels) > 1)
        return {
            "images": len(self.items),
            "exact_duplicates": len(self.sha256) - len(set(self.sha256)),
            "images_in_duplicate_groups": in_groups,
            "duplicate_groups": sum(1 for n in sizes.values() if n > 1),
            "groups_with_conflicting_labels": conflicts,
            "unreadable": len(self.unreadable),
        }


def scan_folder(root: str | Path) -> list[Item]:
    """Every JPEG/PNG under root/<class>/ (recursively), labelled by its class folder.

    Only regular files inside the folder are read: a symbolic link that leads out of it is refused (as the
    batch job refuses it), and pipes, sockets and devices, which would block a reader, are passed over.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    inside = root.resolve()
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    found = [c for c in CLASSES if c in subdirs]
    if not found:
        raise DatasetError(
            f"{root} has no class subfolders: expected folders named {', '.join(CLASSES)} with images inside"
        )
    items = []
    for label, name in enumerate(CLASSES):
        if name not in subdirs:
            continue
        for path in sorted(subdirs[name].rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            target = path.resolve()
            if not target.is_relative_to(inside):
                raise DatasetError(
                    f"{path} leads outside the folder (to {target}) through a symbolic link; training reads only "
                    "files inside the folder it was given"
                )
            if target.is_file():  # a regular file: a pipe or a device would block the reader
                items.append(Item(path, label))
    if not items:
        raise DatasetError(f"{root} has class folders but no JPEG or PNG images in them")
    return items


def index_items(root: str | Path, items: list[Item], *, max_bits: int = NEAR_DUPLICATE_BITS) -> DatasetIndex:
    """Hash every item and group exact and near duplicates; unreadable files are listed, not kept."""
    kept, sha, ph, unreadable = [], [], [], []
    for item in items:
        try:
            data = item.path.read_bytes()
            rgb = load_rgb(item.path)
        except (OSError, ValueError) as exc:
            unreadable.append(f"{item.path}: {exc}")
            continue
        kept.append(item)
        sha.append(hashlib.sha256(data).hexdigest())
        ph.append(perceptual_hash(rgb))
    if not kept:
        raise DatasetError(f"none of the images under {root} could be read")
    phash = np.stack(ph).astype(np.uint64)
    return DatasetIndex(Path(root), kept, sha, phash, group_duplicates(sha, phash, max_bits), unreadable)


def index_folder(root: str | Path) -> DatasetIndex:
    return index_items(root, scan_folder(root))


def overlap_with(test: DatasetIndex, train: DatasetIndex, *, max_bits: int = NEAR_DUPLICATE_BITS) -> list[bool]:
    """For each test item, whether an exact or near duplicate of it is in the training data."""
    train_sha = set(train.sha256)
    flags = []
    for start in range(0, len(test.items), HASH_BLOCK):
        stop = min(start + HASH_BLOCK, len(test.items))
        near = (hamming_matrix_rows(test.phash, train.phash, start, stop) <= max_bits).any(axis=1)
        flags.extend(bool(n) or test.sha256[start + k] in train_sha for k, n in enumerate(near))
    return flags


def class_weights(labels: list[int], num_classes: int = len(CLASSES)) -> list[float]:
    """w_i = N / (C * n_i), so that every class weighs the same in the loss."""
    counts = Counter(labels)
    n = len(labels)
    return [n / (num_classes * counts[c]) if counts[c] else 0.0 for c in range(num_classes)]


def load_arrays(items: list[Item], size: int, *, crop: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All items decoded once into one N x size x size x 3 uint8 array of model inputs, with their labels."""
    x = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        x[i] = model_input(load_rgb(item.path), size, crop=crop)
    return x, np.array([it.label for it in items], dtype=np.int64)
