"""The dataset helper's unpacking (the download itself needs internet and a Kaggle token)."""

import zipfile
from pathlib import Path

import pytest

from scripts.download_dataset import extract, read_credentials
from settings import SAMPLE_DIR


def test_archive_class_folders_are_unpacked(tmp_path: Path) -> None:
    archive = tmp_path / "dataset.zip"
    image = next((SAMPLE_DIR / "glioma").iterdir())
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(image, "Training/glioma/a.jpg")
        zf.write(image, "Testing/glioma/b.jpg")
    folders = extract(archive, tmp_path / "full")
    assert [f.name for f in folders] == ["Testing", "Training"]
    assert (tmp_path / "full" / "Training" / "glioma" / "a.jpg").read_bytes() == image.read_bytes()


def test_archive_entry_outside_the_destination_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(SystemExit, match="outside"):
        extract(archive, tmp_path / "full")
    assert not (tmp_path / "escaped.txt").exists()


def test_missing_token_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="No Kaggle API token"):
        read_credentials(tmp_path / "kaggle.json")
