"""The app's image caches keep uploads and heatmaps at analysis size, within IMAGE_CACHE_MB for the process."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from models.data.imaging import ANALYSIS_SIDE
from services.model_files import file_sha256
from tests.env import environment
from ui.image_cache import ByteBudgetCache, decoded_upload, image_cache
from ui.predictors import heatmap

SIDE = 4096
LIMITS = {"max_bytes": 2**26, "max_pixels": SIDE * SIDE}


def large_png(seed: int) -> bytes:
    """A 4096² slice-like PNG (a bright disc on black, placed by `seed`): a few hundred kB, 48 MB decoded."""
    image = Image.new("L", (SIDE, SIDE))
    offset = 200 + 40 * seed
    ImageDraw.Draw(image).ellipse((offset, offset, offset + 3000, offset + 3200), fill=180)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def kept_arrays() -> list[np.ndarray]:
    return [getattr(value, "rgb", value) for value in image_cache().values()]


@pytest.fixture
def cache_mb() -> int:
    return 256


@pytest.fixture
def cache(cache_mb: int) -> ByteBudgetCache:
    with environment(IMAGE_CACHE_MB=str(cache_mb), INFERENCE_BACKEND="framework"):
        image_cache().clear()
        yield image_cache()
        image_cache().clear()


def test_a_large_upload_is_kept_at_analysis_size_and_read_only(cache: ByteBudgetCache) -> None:
    data = large_png(0)
    decoded = decoded_upload(data, "large.png", **LIMITS)
    assert decoded.rgb.shape == (ANALYSIS_SIDE, ANALYSIS_SIDE, 3)
    assert (decoded.width, decoded.height) == (SIDE, SIDE)  # the file's, as recorded with a saved scan
    assert not decoded.rgb.flags.writeable
    assert decoded_upload(data, "large.png", **LIMITS) is decoded  # a redraw decodes nothing
    [kept] = kept_arrays()
    assert kept.shape == (ANALYSIS_SIDE, ANALYSIS_SIDE, 3)
    assert cache.nbytes == kept.nbytes + len(decoded.stored_bytes) < 4 * 2**20


def test_the_heatmap_of_a_large_image_is_kept_at_analysis_size(
    db_url: str, cache: ByteBudgetCache, tmp_path: Path
) -> None:
    import torch

    from models.nets.cnn import TumorCNN, save_checkpoint

    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "cnn.pth", TumorCNN(), extra={})
    rgb = np.repeat(np.asarray(Image.open(io.BytesIO(large_png(1))))[:, :, None], 3, axis=2)
    cam = heatmap("torch", str(model), file_sha256(model), "a" * 64, rgb)
    assert cam.shape == (ANALYSIS_SIDE, ANALYSIS_SIDE) and not cam.flags.writeable
    assert heatmap("torch", str(model), file_sha256(model), "a" * 64, rgb) is cam
    assert [a.shape for a in kept_arrays()] == [(ANALYSIS_SIDE, ANALYSIS_SIDE)]
    assert cache.nbytes == cam.nbytes


@pytest.mark.parametrize("cache_mb", [8])
def test_uploads_past_the_budget_drop_the_least_recently_used(cache: ByteBudgetCache) -> None:
    # Each keeps a little over 3 MB: two fit in 8 MB, a third does not.
    uploads = [large_png(seed) for seed in range(4)]
    decoded = [decoded_upload(uploads[0], "0.png", **LIMITS), decoded_upload(uploads[1], "1.png", **LIMITS)]
    assert decoded_upload(uploads[0], "0.png", **LIMITS) is decoded[0]  # used again: now the most recent
    decoded += [decoded_upload(uploads[2], "2.png", **LIMITS)]
    assert [value.sha256 for value in cache.values()] == [decoded[0].sha256, decoded[2].sha256]
    assert cache.nbytes <= 8 * 2**20
    decoded += [decoded_upload(uploads[3], "3.png", **LIMITS)]
    assert [value.sha256 for value in cache.values()] == [decoded[2].sha256, decoded[3].sha256]
    assert cache.nbytes <= 8 * 2**20
    assert all(max(a.shape) <= ANALYSIS_SIDE for a in kept_arrays())
    # Dropped means made again when next asked for, not lost.
    assert decoded_upload(uploads[1], "1.png", **LIMITS).rgb.shape == (ANALYSIS_SIDE, ANALYSIS_SIDE, 3)


def test_a_value_larger_than_the_whole_budget_is_returned_but_not_kept() -> None:
    cache = ByteBudgetCache(budget=1000)
    cache.get_or_make("small", lambda: np.zeros(600, np.uint8), lambda a: a.nbytes)
    big = cache.get_or_make("big", lambda: np.zeros(2000, np.uint8), lambda a: a.nbytes)
    assert big.nbytes == 2000 and cache.nbytes == 600 and len(cache.values()) == 1
