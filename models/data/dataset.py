"""Labelled image folders: scanning, loading, duplicate detection, fingerprints and the train/val split."""

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from domain import CLASSES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# Perceptual hashes (256 bits) this many bits apart or fewer count as the same picture: re-encoded, resized
# or slightly edited. Coarser hashes (64 bits) put thousands of merely similar brain slices, chained
# together, into one "duplicate" group on this dataset.
HASH_SIDE = 16
# Hashes compared per block: 64 x 6,000 x 32 bytes is ~50 MB, where all at once would be N x N x 32.
HASH_BLOCK = 64
NEAR_DUPLICATE_BITS = 14


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


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, optionally resized to size x size."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def perceptual_hash(rgb: np.ndarray) -> np.ndarray:
    """256-bit difference hash of the grayscale image (4 uint64): robust to re-encoding, resizing, small edits."""
    gray = Image.fromarray(rgb).convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.BILINEAR)
    px = np.asarray(gray, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).flatten()
    return np.packbits(bits).view(">u8").astype(np.uint64)


def hamming_matrix_rows(hashes: np.ndarray, others: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bit distances between hashes[start:stop] and every hash in others, as a small int matrix."""
    x = np.bitwise_xor(hashes[start:stop, None, :], others[None, :, :])
    bytes_ = x.view(np.uint8).reshape(x.shape[0], x.shape[1], -1)
    return np.unpackbits(bytes_, axis=2).sum(axis=2, dtype=np.int16)


def _group_duplicates(sha: list[str], phash: np.ndarray, max_bits: int) -> list[int]:
    parent = list(range(len(sha)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    first: dict[str, int] = {}
    for i, s in enumerate(sha):
        if s in first:
            union(i, first[s])
        else:
            first[s] = i
    for start in range(0, len(sha), HASH_BLOCK):
        stop = min(start + HASH_BLOCK, len(sha))
        dist = hamming_matrix_rows(phash, phash, start, stop)
        rows, cols = np.nonzero(dist <= max_bits)
        for r, c in zip(rows, cols):
            i = start + int(r)
            if i < c:
                union(i, int(c))
    return [find(i) for i in range(len(sha))]


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
    return DatasetIndex(Path(root), kept, sha, phash, _group_duplicates(sha, phash, max_bits), unreadable)


def index_folder(root: str | Path) -> DatasetIndex:
    return index_items(root, scan_folder(root))


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


def config_split(cfg: dict[str, Any], data_dir: str | Path | None = None) -> tuple[list[Item], list[Item]]:
    """The training and validation items of a run's split, rebuilt from its config (folder, cap per class, seed,
    validation share) with duplicate groups kept on one side as in training; data_dir where the folder moved."""
    root = data_dir or cfg["data_dir"]
    index = index_items(root, cap_items(scan_folder(root), cfg.get("max_images_per_class"), cfg.get("seed", 42)))
    train_idx, val_idx = split_train_val(index, val_fraction=cfg.get("val_fraction", 0.15), seed=cfg.get("seed", 42))
    return [index.items[i] for i in train_idx], [index.items[i] for i in val_idx]


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


def head_box(rgb: np.ndarray, *, margin: float = 0.04) -> tuple[int, int, int]:
    """The square (top, left, side) around the head: rows and columns that hold enough bright pixels.

    Scans in this collection put the head anywhere from a third to all of the frame; cropping to it before
    resizing gives the networks the same anatomy at the same scale. A box may reach past the image's edges
    (the crop pads with black). An image with no clear head (blank, noise) keeps its whole frame.
    """
    h, w = rgb.shape[:2]
    gray, sums = _brightness(rgb)
    level = max(12.0, 0.1 * float(_percentile_99(gray, sums)))
    mask = gray > level
    # A line counts when 2 % of it is bright: labels, rulers and stray specks in the background do not.
    rows = np.flatnonzero(mask.sum(axis=1) > 0.02 * w)
    cols = np.flatnonzero(mask.sum(axis=0) > 0.02 * h)
    if len(rows) == 0 or len(cols) == 0:
        return 0, 0, max(h, w)
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(bottom - top, right - left)
    if side < 0.25 * min(h, w):
        return 0, 0, max(h, w)
    side = int(round(side * (1 + 2 * margin)))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side


def _brightness(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Each pixel's channel mean, float32 (what rgb.mean(axis=2) gives, at a tenth of its cost: a reduction over
    a last axis of 3 is slow), and for uint8 RGB the channel sum (0..765) it is exactly a third of."""
    if rgb.ndim != 3 or rgb.dtype != np.uint8:
        return (rgb.astype(np.float32).mean(axis=2) if rgb.ndim == 3 else rgb.astype(np.float32)), None
    sums = rgb[..., 0].astype(np.uint16) + rgb[..., 1] + rgb[..., 2]
    return sums.astype(np.float32) / np.float32(3), sums


def _percentile_99(gray: np.ndarray, sums: np.ndarray | None) -> float:
    """np.percentile(gray, 99), its two neighbouring order statistics read from a histogram of the channel sums
    instead of a partition of every pixel."""
    if sums is None:
        return float(np.percentile(gray, 99))
    n = sums.size
    index = (n - 1) * 0.99
    below = int(np.floor(index))
    cumulative = np.cumsum(np.bincount(sums.ravel(), minlength=3 * 255 + 1))
    pair = np.searchsorted(cumulative, [below + 1, min(below + 2, n)]).astype(np.float32) / np.float32(3)
    # The same linear interpolation between them as np.percentile makes.
    return float(np.percentile(pair, (index - below) * 100))


def crop_square(rgb: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """The box's pixels, padded with black where it reaches past the image."""
    top, left, side = box
    h, w = rgb.shape[:2]
    out = np.zeros((side, side, 3), dtype=np.uint8)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, h), min(left + side, w)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = rgb[y0:y1, x0:x1]
    return out


def model_input(rgb: np.ndarray, size: int, *, crop: bool) -> np.ndarray:
    """What a network sees: the image (cropped to the head when the model was trained so) at size x size.

    The one preprocessing step shared by training, validation and prediction.
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    if crop:
        rgb = crop_square(rgb, head_box(rgb))
    return resize_rgb(rgb, size)
