"""The dataset health report of a labelled folder, before training on it (`python -m models health`).

Built on the scan and the hashes the training split uses, so a duplicate here is one the split keeps on one side.
"""

import hashlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from PIL import Image

from domain import CLASSES
from models.data.dataset import IMAGE_SUFFIXES, DatasetIndex, Item, index_items, overlap_with, scan_folder
from models.data.duplicates import HASH_BLOCK, NEAR_DUPLICATE_BITS, hamming_matrix_rows

# Bump when the report's fields change, so cached reports of the old shape are computed again.
REPORT_VERSION = 1
# A class with a smaller share of the folder than this is a warning the admin acknowledges before training.
MIN_CLASS_SHARE = 0.05
MODE_LABELS = {
    "1": "black and white (1-bit)",
    "L": "grayscale (8-bit)",
    "LA": "grayscale with alpha",
    "P": "palette",
    "RGB": "RGB",
    "RGBA": "RGB with alpha",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "I;16": "grayscale (16-bit)",
    "I;16B": "grayscale (16-bit, big-endian)",
    "I;16L": "grayscale (16-bit)",
    "I": "grayscale (32-bit integer)",
    "F": "grayscale (32-bit float)",
}


def mode_label(mode: str) -> str:
    """A PIL pixel mode in words: "L" is "grayscale (8-bit)"."""
    return MODE_LABELS.get(mode, mode)


def is_wide(mode: str) -> bool:
    """Whether pixels hold more than 8 bits per channel (16-bit, 32-bit integer or float)."""
    return mode.startswith("I") or mode == "F"


@dataclass
class HealthReport:
    """A labelled folder's health, as plain JSON-ready values; paths are relative to the folder (or test folder).

    per_class: readable images per class. formats: {"width", "height", "mode", "images"}, most common first.
    unreadable: {"path", "class", "reason"} for files training cannot decode, and for files in class folders it
    passes over. groups: duplicate groups, largest first: {"exact", "conflicting_labels", "images": [{"path",
    "class"}]}, exact when every file holds the same bytes. test: None, or {"root", "images", "per_class":
    {class: {"images", "leaked"}}, "leaked": [{"path", "class", "match"}], "unreadable": [...]}.
    """

    root: str
    fingerprint: str  # DatasetIndex.fingerprint of the readable images: what a run on this folder records
    per_class: dict[str, int]
    formats: list[dict[str, Any]]
    unreadable: list[dict[str, str]]
    duplicates: dict[str, int]  # DatasetIndex.duplicate_report()
    groups: list[dict[str, Any]]
    test: dict[str, Any] | None = None
    version: int = REPORT_VERSION

    @property
    def images(self) -> int:
        return sum(self.per_class.values())

    @property
    def imbalance_ratio(self) -> float | None:
        """Largest class over smallest; None when a class has no images (the ratio is infinite)."""
        smallest = min(self.per_class.values())
        return max(self.per_class.values()) / smallest if smallest else None

    @property
    def small_classes(self) -> dict[str, float]:
        """Classes below MIN_CLASS_SHARE of the folder, with their share."""
        total = self.images or 1
        return {name: n / total for name, n in self.per_class.items() if n / total < MIN_CLASS_SHARE}

    @property
    def leaked(self) -> int:
        return len(self.test["leaked"]) if self.test else 0

    @property
    def warnings(self) -> list[str]:
        """What the admin must acknowledge before training: a class below 5 %, test images also in training."""
        out = [
            f"{name} has {self.per_class[name]:,} images, {share:.1%} of the folder (below {MIN_CLASS_SHARE:.0%}): "
            "the model will rarely see it and its validation figures rest on a handful of images."
            for name, share in self.small_classes.items()
        ]
        if self.test and self.leaked:
            out.append(
                f"{self.leaked:,} of {self.test['images']:,} test images ({self.leaked / self.test['images']:.1%}) "
                "have an exact or near duplicate in the training folder: the test score will flatter the model."
            )
        return out

    @property
    def notes(self) -> list[str]:
        """What is worth knowing but does not stop a run."""
        out = []
        if self.unreadable:
            out.append(f"{len(self.unreadable):,} files in the class folders will not be used (listed with reasons).")
        if self.duplicates["duplicate_groups"]:
            out.append(
                f"{self.duplicates['images_in_duplicate_groups']:,} images fall in "
                f"{self.duplicates['duplicate_groups']:,} duplicate groups; the validation split keeps each group "
                "on one side."
            )
        if self.duplicates["groups_with_conflicting_labels"]:
            out.append(
                f"{self.duplicates['groups_with_conflicting_labels']:,} duplicate groups hold images of different "
                "classes: the same picture is labelled twice."
            )
        wide = sum(f["images"] for f in self.formats if is_wide(f["mode"]))
        if wide:
            out.append(
                f"{wide:,} images have more than 8 bits per pixel: the loader clips them to 8 bits (every value "
                "above 255 becomes white), so convert them to 8-bit grayscale first."
            )
        return out

    @property
    def needs_acknowledgment(self) -> bool:
        return bool(self.warnings)

    def to_dict(self) -> dict[str, Any]:
        """Every field, with the derived figures a reader of the JSON wants beside them."""
        return asdict(self) | {
            "images": self.images,
            "imbalance_ratio": self.imbalance_ratio,
            "warnings": self.warnings,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HealthReport":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def folder_fingerprint(root: str | Path) -> str:
    """A hash of the folder's path, its images' names, classes and bytes: the same folder, unchanged."""
    root = Path(root)
    digest = hashlib.sha256(str(root).encode())
    for item in scan_folder(root):
        sha = hashlib.sha256(item.path.read_bytes()).hexdigest()
        digest.update(f"\n{_relative(item.path, root)}:{CLASSES[item.label]}:{sha}".encode())
    return digest.hexdigest()


def _passed_over(root: Path) -> list[dict[str, str]]:
    """Files in the class folders that training skips because of their type (hidden files aside)."""
    out = []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.lower() not in CLASSES:
            continue
        for path in sorted(child.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() not in IMAGE_SUFFIXES:
                out.append(
                    {
                        "path": _relative(path, root),
                        "class": child.name.lower(),
                        "reason": "not a JPEG or PNG file: training passes over it",
                    }
                )
    return out


def _unreadable(root: Path, items: list[Item], index: DatasetIndex) -> list[dict[str, str]]:
    # index_items lists the files it could not decode in scan order, each as "<path>: <reason>".
    kept = {item.path for item in index.items}
    dropped = [item for item in items if item.path not in kept]
    return [
        {
            "path": _relative(item.path, root),
            "class": CLASSES[item.label],
            "reason": text.removeprefix(f"{item.path}: "),
        }
        for item, text in zip(dropped, index.unreadable)
    ]


def _formats(index: DatasetIndex) -> list[dict[str, Any]]:
    counts: Counter[tuple[int, int, str]] = Counter()
    for item in index.items:
        with Image.open(item.path) as img:  # the header only: nothing is decoded
            counts[(img.width, img.height, img.mode)] += 1
    return [{"width": w, "height": h, "mode": mode, "images": n} for (w, h, mode), n in counts.most_common()]


def _groups(index: DatasetIndex) -> list[dict[str, Any]]:
    members: dict[int, list[int]] = defaultdict(list)
    for i, group in enumerate(index.groups):
        members[group].append(i)
    out = []
    for idx in members.values():
        if len(idx) < 2:
            continue
        labels = {index.items[i].label for i in idx}
        out.append(
            {
                "exact": len({index.sha256[i] for i in idx}) == 1,
                "conflicting_labels": len(labels) > 1,
                "images": [
                    {"path": _relative(index.items[i].path, index.root), "class": CLASSES[index.items[i].label]}
                    for i in idx
                ],
            }
        )
    out.sort(key=lambda g: (-len(g["images"]), g["images"][0]["path"]))
    return out


def _matches(test: DatasetIndex, train: DatasetIndex, positions: list[int]) -> list[str]:
    """For each test position, the training image it duplicates: same bytes first, else the nearest hash."""
    by_sha = {}
    for i, sha in enumerate(train.sha256):
        by_sha.setdefault(sha, i)
    hashes = test.phash[positions]
    out = []
    for start in range(0, len(positions), HASH_BLOCK):
        stop = min(start + HASH_BLOCK, len(positions))
        nearest = hamming_matrix_rows(hashes, train.phash, start, stop).argmin(axis=1)
        for k, near in enumerate(nearest):
            match = by_sha.get(test.sha256[positions[start + k]], int(near))
            out.append(_relative(train.items[match].path, train.root))
    return out


def _leakage(test_root: Path, train: DatasetIndex, max_bits: int) -> dict[str, Any]:
    items = scan_folder(test_root)
    test = index_items(test_root, items, max_bits=max_bits)
    flags = overlap_with(test, train, max_bits=max_bits)
    positions = [i for i, flag in enumerate(flags) if flag]
    per_class = {name: {"images": 0, "leaked": 0} for name in CLASSES}
    for item, flag in zip(test.items, flags):
        per_class[CLASSES[item.label]]["images"] += 1
        per_class[CLASSES[item.label]]["leaked"] += int(flag)
    return {
        "root": str(test_root),
        "fingerprint": test.fingerprint,
        "images": len(test.items),
        "per_class": per_class,
        "leaked": [
            {"path": _relative(test.items[i].path, test_root), "class": CLASSES[test.items[i].label], "match": match}
            for i, match in zip(positions, _matches(test, train, positions))
        ],
        "unreadable": _unreadable(test_root, items, test) + _passed_over(test_root),
    }


def health_report(
    root: str | Path, *, test: str | Path | None = None, max_bits: int = NEAR_DUPLICATE_BITS
) -> HealthReport:
    """The report of a labelled folder (and its overlap with a labelled test folder); DatasetError if unusable."""
    root = Path(root)
    items = scan_folder(root)
    index = index_items(root, items, max_bits=max_bits)
    counts = Counter(CLASSES[item.label] for item in index.items)
    return HealthReport(
        root=str(root),
        fingerprint=index.fingerprint,
        per_class={name: counts.get(name, 0) for name in CLASSES},
        formats=_formats(index),
        unreadable=_unreadable(root, items, index) + _passed_over(root),
        duplicates=index.duplicate_report(),
        groups=_groups(index),
        test=_leakage(Path(test), index, max_bits) if test is not None else None,
    )


def format_report(report: HealthReport, *, groups_shown: int = 5) -> str:
    """The report as text for a terminal."""
    lines = [
        f"Dataset health: {report.root}",
        f"  {report.images:,} readable images  fingerprint {report.fingerprint[:16]}",
    ]
    ratio = report.imbalance_ratio
    lines.append(
        "Images per class (imbalance "
        + (f"{ratio:.2f}x" if ratio is not None else "infinite: a class has no images")
        + ", largest over smallest):"
    )
    for name, n in report.per_class.items():
        lines.append(f"  {name:<11}{n:>7,}  {n / (report.images or 1):6.1%}")
    lines.append("Sizes and modes:")
    for f in report.formats:
        lines.append(f"  {f['width']}x{f['height']:<6}{mode_label(f['mode']):<32}{f['images']:>7,}")
    lines.append(f"Unreadable or passed over: {len(report.unreadable):,}")
    lines.extend(f"  {u['path']}: {u['reason']}" for u in report.unreadable)
    d = report.duplicates
    exact = sum(1 for g in report.groups if g["exact"])
    lines.append(
        f"Duplicates: {d['duplicate_groups']:,} groups ({exact:,} of identical files, "
        f"{d['duplicate_groups'] - exact:,} with near duplicates) holding {d['images_in_duplicate_groups']:,} images; "
        f"{d['exact_duplicates']:,} files are extra copies; {d['groups_with_conflicting_labels']:,} groups mix classes"
    )
    for g in report.groups[:groups_shown]:
        kind = "identical" if g["exact"] else "near"
        lines.append(f"  {len(g['images'])} {kind}: " + ", ".join(i["path"] for i in g["images"][:6]))
    if len(report.groups) > groups_shown:
        lines.append(f"  … and {len(report.groups) - groups_shown:,} more groups (--json lists them all)")
    if report.test is not None:
        t = report.test
        lines.append(
            f"Test folder: {t['root']}  {t['images']:,} images, {report.leaked:,} with a duplicate in training"
        )
        for name, c in t["per_class"].items():
            share = c["leaked"] / c["images"] if c["images"] else 0.0
            lines.append(f"  {name:<11}{c['leaked']:>6,} of {c['images']:>6,}  {share:6.1%}")
    for title, entries in (("WARNINGS (acknowledge before training)", report.warnings), ("Notes", report.notes)):
        if entries:
            lines.append(f"{title}:")
            lines.extend(f"  - {e}" for e in entries)
    return "\n".join(lines)
