"""Real small disks for faults of full storage: a tmpfs mounted for a test, and a file that fills it."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.skip import skip_unless_required


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as mount writes it: "1m", "512m") at `folder`, made here and unmounted after; the test
    is skipped where tmpfs cannot be mounted (mounting needs root)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        skip_unless_required(f"a tmpfs cannot be mounted here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """A file written under `folder` until its disk has no byte left; returns it (unlink it to free the space)."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 2**20)
        except OSError:
            pass
    return filler
