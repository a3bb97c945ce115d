"""The dataset health report on a folder built from real sample images, whose every answer is known."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.cli import main
from models.data.health import HealthReport, health_report
from settings import SAMPLE_DIR


def rgb_samples(name: str) -> list[Path]:
    return [p for p in sorted((SAMPLE_DIR / name).glob("*.jpg")) if Image.open(p).mode == "RGB"]


def copy(source: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(source.read_bytes())
    return dest


def constructed(root: Path) -> dict[str, Path]:
    """A training folder and a test folder with known counts, duplicates, unreadable files and leakage.

    train/notumor     11 RGB: one image three times (identical files) and eight others
    train/meningioma   8 RGB: one image and a slightly edited copy of it as PNG (near duplicates), six others
    train/pituitary    6: four RGB, one converted to 8-bit grayscale, one to 16-bit grayscale
    train/glioma       1 grayscale, a truncated JPEG and a text file
    test/notumor       a copy of a training image and one that is not in training
    test/meningioma    one not in training
    test/pituitary     a training image re-encoded at a lower JPEG quality
    """
    train, test = root / "train", root / "test"
    notumor, meningioma, pituitary = rgb_samples("notumor"), rgb_samples("meningioma"), rgb_samples("pituitary")
    for k in range(3):
        copy(notumor[0], train / "notumor" / f"twin-{k}.jpg")
    for source in notumor[1:9]:
        copy(source, train / "notumor" / source.name)

    copy(meningioma[0], train / "meningioma" / meningioma[0].name)
    edited = np.asarray(Image.open(meningioma[0]).convert("RGB")).copy()
    edited[100:116, 100:116] = np.clip(edited[100:116, 100:116].astype(int) + 6, 0, 255)
    Image.fromarray(edited).save(train / "meningioma" / "edited.png")
    for source in meningioma[1:7]:
        copy(source, train / "meningioma" / source.name)

    for source in pituitary[:4]:
        copy(source, train / "pituitary" / source.name)
    Image.open(pituitary[4]).convert("L").save(train / "pituitary" / "gray.png")
    wide = np.asarray(Image.open(pituitary[5]).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(wide).save(train / "pituitary" / "sixteen.png")

    glioma = [p for p in sorted((SAMPLE_DIR / "glioma").glob("*.jpg")) if Image.open(p).mode == "L"]
    copy(glioma[0], train / "glioma" / glioma[0].name)
    (train / "glioma" / "broken.jpg").write_bytes(glioma[1].read_bytes()[:300])
    (train / "glioma" / "notes.txt").write_text("scanner settings")

    copy(notumor[1], test / "notumor" / "leaked.jpg")
    copy(notumor[12], test / "notumor" / notumor[12].name)
    copy(meningioma[8], test / "meningioma" / meningioma[8].name)
    (test / "pituitary").mkdir()
    Image.open(pituitary[0]).save(test / "pituitary" / "recoded.jpg", quality=70)
    return {
        "train": train,
        "test": test,
        "twin": notumor[0],
        "leak_source": notumor[1],
        "near_source": meningioma[0],
        "recode_source": pituitary[0],
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return constructed(tmp_path_factory.mktemp("health"))


@pytest.fixture(scope="module")
def report(folders: dict[str, Path]) -> HealthReport:
    return health_report(folders["train"], test=folders["test"])


def test_counts_per_class_and_the_imbalance_ratio(report: HealthReport) -> None:
    assert report.per_class == {"glioma": 1, "meningioma": 8, "notumor": 11, "pituitary": 6}
    assert report.images == 26
    assert report.imbalance_ratio == 11.0
    assert report.small_classes == {"glioma": pytest.approx(1 / 26)}


def test_sizes_and_modes_name_the_grayscale_and_the_16_bit_images(report: HealthReport) -> None:
    modes = Counter()
    for f in report.formats:
        assert (f["width"], f["height"]) == (224, 224)
        modes[f["mode"]] += f["images"]
    assert modes == {"RGB": 23, "L": 2, "I;16": 1}
    assert any("1 images have more than 8 bits per pixel" in note for note in report.notes)


def test_unreadable_and_passed_over_files_are_listed_with_their_reasons(report: HealthReport) -> None:
    by_path = {u["path"]: u for u in report.unreadable}
    assert set(by_path) == {"glioma/broken.jpg", "glioma/notes.txt"}
    assert "truncated" in by_path["glioma/broken.jpg"]["reason"].lower()
    assert "not a JPEG or PNG" in by_path["glioma/notes.txt"]["reason"]
    assert report.duplicates["unreadable"] == 1  # the text file is not an image training tries to read


def test_exact_and_near_duplicate_groups(folders: dict[str, Path], report: HealthReport) -> None:
    assert report.duplicates == {
        "images": 26,
        "exact_duplicates": 2,
        "images_in_duplicate_groups": 5,
        "duplicate_groups": 2,
        "groups_with_conflicting_labels": 0,
        "unreadable": 1,
    }
    identical, near = report.groups  # largest first
    assert identical["exact"] and not identical["conflicting_labels"]
    assert [i["path"] for i in identical["images"]] == [f"notumor/twin-{k}.jpg" for k in range(3)]
    assert not near["exact"]
    assert {i["path"] for i in near["images"]} == {f"meningioma/{folders['near_source'].name}", "meningioma/edited.png"}


def test_test_images_with_a_duplicate_in_training_per_class(folders: dict[str, Path], report: HealthReport) -> None:
    assert report.test is not None
    assert report.test["images"] == 4
    assert report.test["per_class"] == {
        "glioma": {"images": 0, "leaked": 0},
        "meningioma": {"images": 1, "leaked": 0},
        "notumor": {"images": 2, "leaked": 1},
        "pituitary": {"images": 1, "leaked": 1},
    }
    assert sorted(report.test["leaked"], key=lambda x: x["path"]) == [
        {"path": "notumor/leaked.jpg", "class": "notumor", "match": f"notumor/{folders['leak_source'].name}"},
        {"path": "pituitary/recoded.jpg", "class": "pituitary", "match": f"pituitary/{folders['recode_source'].name}"},
    ]


def test_a_small_class_and_leakage_are_warnings_to_acknowledge(report: HealthReport) -> None:
    assert report.needs_acknowledgment
    small, leak = report.warnings
    assert small.startswith("glioma has 1 images, 3.8% of the folder (below 5%)")
    assert leak.startswith("2 of 4 test images (50.0%) have an exact or near duplicate in the training folder")


def test_the_shipped_sample_needs_no_acknowledgment() -> None:
    report = health_report(SAMPLE_DIR)
    assert report.per_class == {"glioma": 20, "meningioma": 20, "notumor": 20, "pituitary": 20}
    assert report.imbalance_ratio == 1.0
    assert report.warnings == [] and report.groups == [] and report.unreadable == []


def test_the_report_survives_a_round_trip_through_json(report: HealthReport) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    assert data["imbalance_ratio"] == 11.0 and data["warnings"] == report.warnings
    assert HealthReport.from_dict(data) == report


def test_the_command_prints_the_report_or_says_why_it_cannot(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["health", str(folders["train"]), "--test", str(folders["test"])]) == 0
    text = capsys.readouterr().out
    assert "imbalance 11.00x" in text and "grayscale (16-bit)" in text and "glioma/broken.jpg" in text
    assert "WARNINGS (acknowledge before training)" in text

    assert main(["health", str(folders["train"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["per_class"]["notumor"] == 11 and data["test"] is None

    assert main(["health", str(tmp_path)]) == 2
    assert "has no class subfolders" in capsys.readouterr().err
