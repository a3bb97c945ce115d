"""What a network sees of an image: RGB, cropped to the head where the model was trained so, at its input size."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


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
