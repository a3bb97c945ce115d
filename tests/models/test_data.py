"""Dataset scanning, duplicate grouping and the train/validation split, on real sample images."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from domain import CLASSES
from models.data.dataset import DatasetError, index_folder, overlap_with
from models.data.duplicates import NEAR_DUPLICATE_BITS, hamming_matrix_rows, perceptual_hash
from models.data.split import split_train_val
from models.evaluation.metrics import classification_report
from settings import SAMPLE_DIR


@pytest.fixture
def folder_with_duplicates(tmp_path: Path) -> Path:
    """The sample, plus an exact copy and a re-encoded, slightly resized copy of a few images."""
    root = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, root)
    for name in CLASSES:
        first = sorted((root / name).iterdir())[0]
        shutil.copy(first, root / name / f"copy_{first.name}")
        img = Image.open(first).convert("RGB").resize((200, 200))
        img.save(root / name / f"reencoded_{first.stem}.png")
    return root


def test_exact_and_near_duplicates_share_a_group(folder_with_duplicates: Path) -> None:
    index = index_folder(folder_with_duplicates)
    by_name = {it.path.name: g for it, g in zip(index.items, index.groups)}
    for name in CLASSES:
        first = sorted(
            p.name for p in (folder_with_duplicates / name).iterdir() if not p.name.startswith(("copy_", "reencoded_"))
        )[0]
        assert by_name[f"copy_{first}"] == by_name[first]
        assert by_name[f"reencoded_{Path(first).stem}.png"] == by_name[first]
    # The sample has no duplicates of its own: one exact copy and one near copy of an image in each class.
    assert index.duplicate_report() == {
        "images": 80 + 2 * len(CLASSES),
        "exact_duplicates": len(CLASSES),
        "images_in_duplicate_groups": 3 * len(CLASSES),
        "duplicate_groups": len(CLASSES),
        "groups_with_conflicting_labels": 0,
        "unreadable": 0,
    }


def test_no_duplicate_group_crosses_the_split(folder_with_duplicates: Path) -> None:
    index = index_folder(folder_with_duplicates)
    train, val = split_train_val(index, val_fraction=0.25, seed=7)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(index.items)
    assert {index.groups[i] for i in train}.isdisjoint({index.groups[i] for i in val})
    # Stratified: every class is on both sides, in roughly the requested share.
    val_counts = Counter(index.items[i].label for i in val)
    assert all(3 <= val_counts[c] <= 8 for c in range(len(CLASSES)))


def test_split_is_reproducible_and_seeded() -> None:
    index = index_folder(SAMPLE_DIR)
    assert split_train_val(index, val_fraction=0.2, seed=1) == split_train_val(index, val_fraction=0.2, seed=1)
    assert split_train_val(index, val_fraction=0.2, seed=1) != split_train_val(index, val_fraction=0.2, seed=2)


def test_fingerprint_follows_content_not_names(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE_DIR, tmp_path / "a")
    renamed = tmp_path / "b"
    shutil.copytree(SAMPLE_DIR, renamed)
    victim = sorted((renamed / "glioma").iterdir())[0]
    victim.rename(victim.with_name("renamed.jpg"))
    assert index_folder(tmp_path / "a").fingerprint == index_folder(renamed).fingerprint
    shutil.move(str(renamed / "glioma" / "renamed.jpg"), renamed / "meningioma" / "renamed.jpg")
    assert index_folder(tmp_path / "a").fingerprint != index_folder(renamed).fingerprint


def test_test_images_duplicated_in_training_are_flagged(tmp_path: Path) -> None:
    test_dir = tmp_path / "test"
    for name in CLASSES:
        (test_dir / name).mkdir(parents=True)
    sample = sorted((SAMPLE_DIR / "glioma").iterdir())[0]
    shutil.copy(sample, test_dir / "glioma" / "seen.jpg")
    unseen = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(unseen).save(test_dir / "notumor" / "unseen.png")
    flags = overlap_with(index_folder(test_dir), index_folder(SAMPLE_DIR))
    assert sorted(flags) == [False, True]


def test_folder_without_class_subfolders_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    with pytest.raises(DatasetError, match="no class subfolders"):
        index_folder(tmp_path)


def test_perceptual_hash_ignores_re_encoding() -> None:
    path = sorted((SAMPLE_DIR / "pituitary").iterdir())[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    darker = (rgb * 0.9).astype(np.uint8)
    other = np.asarray(Image.open(sorted((SAMPLE_DIR / "notumor").iterdir())[3]).convert("RGB"))
    hashes = np.stack([perceptual_hash(rgb), perceptual_hash(darker), perceptual_hash(other)])
    [[_, to_darker, to_other]] = hamming_matrix_rows(hashes, hashes, 0, 1)
    assert to_darker <= NEAR_DUPLICATE_BITS < to_other


def test_classification_report_counts() -> None:
    report = classification_report(np.array([0, 0, 1, 2, 3, 3]), np.array([0, 1, 1, 2, 3, 0]))
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"][0] == [1, 1, 0, 0]
    assert report["per_class"]["glioma"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["meningioma"]["recall"] == pytest.approx(1.0)
    assert report["count"] == 6


def test_similar_but_distinct_slices_are_not_chained_into_one_group() -> None:
    index = index_folder(SAMPLE_DIR)
    # The sample has no duplicates: every image must stand alone, however alike brain slices look.
    assert max(Counter(index.groups).values()) <= 2


def test_a_large_duplicate_group_does_not_swallow_the_validation_share(tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, root)
    first = sorted((root / "notumor").iterdir())[0]
    for k in range(30):  # one picture 31 times over: a group bigger than the validation share
        shutil.copy(first, root / "notumor" / f"copy{k}_{first.name}")
    index = index_folder(root)
    train, val = split_train_val(index, val_fraction=0.2, seed=3)
    assert len(val) <= 0.2 * len(index.items) + 1
    assert all(index.items[i].path.name != first.name for i in val)


def test_head_box_crops_to_the_bright_region_and_keeps_blank_frames() -> None:
    from models.data.preprocessing import crop_square, head_box, model_input

    img = np.zeros((200, 300, 3), dtype=np.uint8)
    img[50:150, 100:180] = 200  # a "head" 100 tall, 80 wide
    top, left, side = head_box(img, margin=0.0)
    assert (top, side) == (50, 100) and left == 90  # square, centred on the head
    crop = crop_square(img, (top, left, side))
    assert crop.shape == (100, 100, 3) and crop[:, 10:90].min() == 200 and crop[:, :10].max() == 0
    assert head_box(np.zeros((64, 64, 3), dtype=np.uint8)) == (0, 0, 64)
    assert model_input(img, 32, crop=True).shape == (32, 32, 3)
    # A box past the edge pads with black rather than failing.
    assert crop_square(img, (-10, -10, 40))[:10].max() == 0


def test_the_head_boxs_brightness_and_percentile_are_numpys_to_the_bit() -> None:
    """head_box reads its level from a histogram of channel sums: the same float as the plain computation, so the
    crop (and every prediction after it) is the one the models were trained with."""
    from models.data.preprocessing import _brightness, _percentile_99, load_rgb

    rng = np.random.default_rng(3)
    images = [load_rgb(path, size=None) for path in sorted(SAMPLE_DIR.glob("*/*.jpg"))]
    images += [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(224, 224, 3), (301, 199, 3), (7, 3, 3)]]
    images += [np.zeros((64, 64, 3), np.uint8), np.full((50, 60, 3), 255, np.uint8)]
    for rgb in images:
        gray, sums = _brightness(rgb)
        plain = rgb.astype(np.float32).mean(axis=2)
        assert sums is not None and np.array_equal(gray, plain)
        assert _percentile_99(gray, sums) == float(np.percentile(plain, 99))
    gray, sums = _brightness(images[0][..., 0])  # one channel: the plain computation itself
    assert sums is None and _percentile_99(gray, sums) == float(np.percentile(images[0][..., 0], 99))


def test_a_capped_runs_split_is_rebuilt_from_its_config() -> None:
    from models.data.split import config_split
    from models.training.config import make_config
    from models.training.prepare import prepare_data

    cfg = make_config("torch", str(SAMPLE_DIR), "report", max_images_per_class=7, seed=3)
    data = prepare_data(cfg)
    train, val = config_split(cfg.to_dict())
    assert len(train) == len(data.y_train) and len(val) == len(data.y_val)
    assert [it.label for it in val] == data.y_val.tolist()
    val_sha = {data.index.sha256[data.index.items.index(it)] for it in val}
    train_sha = {data.index.sha256[data.index.items.index(it)] for it in train}
    assert len(train) + len(val) == 4 * 7 and not val_sha & train_sha
