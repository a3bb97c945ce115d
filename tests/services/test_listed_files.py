"""A batch job reads each listed file again when its turn comes: whatever was put in its place after the listing
(a named pipe, a link out of the folder, a larger file) is refused at once, in words, without waiting on it."""

import os
import shutil
import threading
from pathlib import Path

import pytest

from services.batch_input import BatchInputError, list_folder, read_listed_file
from settings import SAMPLE_DIR

MAX = 2**20


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    root.mkdir()
    for path in sorted(SAMPLE_DIR.rglob("*.jpg"))[:2]:
        shutil.copyfile(path, root / path.name)
    (root / "noext").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    return root


def read_in_time(root: Path, rel_path: str, *, max_bytes: int = MAX, seconds: float = 5.0) -> bytes | Exception:
    """read_listed_file's bytes or error; fails the test when it is still waiting after `seconds`."""
    outcome: list[bytes | Exception] = []

    def read() -> None:
        try:
            outcome.append(read_listed_file(root, rel_path, max_bytes=max_bytes))
        except Exception as exc:  # judged by the caller
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        # Unblock the reader (it waits for a writer of the pipe) so the test run can end.
        with open(root / rel_path, "wb"):
            pass
        pytest.fail(f"reading {rel_path} still waited after {seconds} s")
    return outcome[0]


def test_a_listed_file_is_read_whole(folder: Path) -> None:
    listing = list_folder(folder)
    for rel_path in listing.images:
        assert read_in_time(folder, rel_path) == (folder / rel_path).read_bytes()


@pytest.mark.parametrize("rel_path", ["noext", None], ids=["sniffed-dicom", "jpeg"])
def test_a_named_pipe_put_in_place_of_a_listed_file_is_refused_without_waiting(folder: Path, rel_path: str) -> None:
    listing = list_folder(folder)
    rel_path = rel_path or next(p for p in listing.images if p.endswith(".jpg"))
    assert rel_path in listing.images
    (folder / rel_path).unlink()
    os.mkfifo(folder / rel_path)
    error = read_in_time(folder, rel_path)
    assert isinstance(error, BatchInputError) and "no longer a regular file" in str(error)


def test_a_link_out_of_the_folder_put_in_place_of_a_listed_file_is_not_read(folder: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    shutil.copyfile(sorted(SAMPLE_DIR.rglob("*.jpg"))[0], secret)
    [first, *_] = list_folder(folder).images
    (folder / first).unlink()
    (folder / first).symlink_to(secret)
    error = read_in_time(folder, first)
    assert isinstance(error, BatchInputError) and "leads outside the folder" in str(error)


def test_a_link_inside_the_folder_is_read(folder: Path) -> None:
    [first, *_] = list_folder(folder).images
    (folder / "link.jpg").symlink_to(folder / first)
    assert read_in_time(folder, "link.jpg") == (folder / first).read_bytes()


def test_a_file_grown_past_the_limit_after_the_listing_is_refused(folder: Path) -> None:
    [first, *_] = list_folder(folder).images
    (folder / first).write_bytes(bytes(MAX + 1))
    error = read_in_time(folder, first)
    assert isinstance(error, BatchInputError) and "over the limit of 1 MB" in str(error)
