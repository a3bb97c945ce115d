"""Server-side data folders: only those under the allowed roots may be read, and labelled ones are found there."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from domain import CLASSES
from models.data.dataset import DatasetError, scan_folder

# Folders below a root that are looked at when listing datasets; deep trees are not walked to the end.
SEARCH_DEPTH = 3
MAX_FOLDERS_VISITED = 2000


@dataclass(frozen=True)
class LabelledFolder:
    path: Path  # resolved: symlinks followed
    per_class: dict[str, int]

    @property
    def images(self) -> int:
        return sum(self.per_class.values())


def allowed_folder(path: str | Path, roots: Sequence[Path]) -> Path:
    """The existing folder `path` resolved (symlinks followed), if it lies under one of `roots`; DatasetError if not."""
    text = str(path).strip()
    if not text:
        raise DatasetError("choose a folder")
    given = Path(text).expanduser()
    if not given.is_absolute():
        raise DatasetError(f"{text} is not a full path: give the folder's absolute path (it starts with /)")
    resolved = given.resolve()
    # Checked after following links, so a link that leads out of a root is refused like any outside folder.
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        listed = ", ".join(str(root) for root in roots) or "none configured"
        raise DatasetError(
            f"{text} is outside the allowed data folders ({listed}); add its parent to ALLOWED_DATA_ROOTS to use it"
        )
    if not resolved.exists():
        raise DatasetError(f"{text} does not exist")
    if not resolved.is_dir():
        raise DatasetError(f"{text} is a file, not a folder")
    return resolved


def labelled_folder(path: str | Path, roots: Sequence[Path]) -> LabelledFolder:
    """An allowed folder with class subfolders of images, and how many images each class has."""
    resolved = allowed_folder(path, roots)
    counts = Counter(CLASSES[item.label] for item in scan_folder(resolved))
    return LabelledFolder(resolved, {name: counts.get(name, 0) for name in CLASSES})


def find_labelled_folders(roots: Sequence[Path], *, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Folders under the roots (the roots included) that have at least one class subfolder, in root order."""
    found: list[Path] = []
    visited = 0
    for root in roots:
        level = [root.resolve()] if root.is_dir() else []
        for _ in range(depth + 1):
            below: list[Path] = []
            for folder in level:
                visited += 1
                if visited > MAX_FOLDERS_VISITED:
                    return found
                try:
                    children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue
                if any(child.name.lower() in CLASSES for child in children):
                    if folder not in found:
                        found.append(folder)
                    continue  # a labelled folder's class folders are not datasets of their own
                below.extend(children)
            level = below
    return found
