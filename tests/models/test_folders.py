"""Server-side data folders: only folders under the allowed roots, links followed, labelled ones found."""

from pathlib import Path

import pytest

from models.data.dataset import DatasetError
from models.data.folders import allowed_folder, find_labelled_folders, labelled_folder
from settings import SAMPLE_DIR


def make_labelled(folder: Path, classes: tuple[str, ...] = ("glioma", "notumor")) -> Path:
    for name in classes:
        (folder / name).mkdir(parents=True)
        source = next((SAMPLE_DIR / name).glob("*.jpg"))
        (folder / name / source.name).write_bytes(source.read_bytes())
    return folder


def test_a_labelled_folder_under_a_root_is_counted_per_class(tmp_path: Path) -> None:
    folder = make_labelled(tmp_path / "root" / "scans")
    found = labelled_folder(folder, [tmp_path / "root"])
    assert found.path == folder.resolve()
    assert found.per_class == {"glioma": 1, "meningioma": 0, "notumor": 1, "pituitary": 0}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "choose a folder"),
        ("relative/path", "not a full path"),
        ("/root/missing", "does not exist"),
        ("/etc", "outside the allowed data folders"),
        ("/root/../etc", "outside the allowed data folders"),
    ],
)
def test_folders_a_person_can_get_wrong_are_refused_with_the_reason(tmp_path: Path, given: str, message: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DatasetError, match=message):
        allowed_folder(given.replace("/root", str(root)), [root])


def test_a_link_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", make_labelled(tmp_path / "outside")
    inside = make_labelled(root / "real")
    (root / "escape").symlink_to(outside)
    (tmp_path / "alias").symlink_to(inside)
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        allowed_folder(root / "escape", [root])
    assert allowed_folder(tmp_path / "alias", [root]) == inside


def test_labelled_folders_are_found_below_the_roots_but_not_their_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first, second = make_labelled(root / "a" / "train"), make_labelled(root / "b" / "c" / "test")
    (root / "notes").mkdir()
    assert find_labelled_folders([root, tmp_path / "absent"]) == [first, second]
