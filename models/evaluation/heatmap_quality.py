"""How far a model's heatmaps can be trusted, on validation images: deletion and insertion curves against a random
map (faithfulness, as in RISE), and how much of the heat, and which peak, lies inside the brain."""

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from domain import CLASSES

# Fractions of the input hidden (deletion) or revealed (insertion): 0, 1/16, ..., 1.
STEPS = 16
# The random maps compared against: values on an 8 x 8 grid, laid over the input as smoothly as a real map.
RANDOM_GRID = 8
# The skull ring's width, as a share of the head's size (the square root of its area): about 11 px on a 224 px
# input whose head fills the frame, what the scalp and bone take on these slices.
SKULL_RING = 0.08


def head_mask(x: np.ndarray) -> np.ndarray:
    """The head on a model input (H x W x 3 uint8): its bright pixels, specks removed, and every pixel lying between
    bright ones both along its row and along its column (the dark inside of the skull included)."""
    gray = np.asarray(x, dtype=np.float32).mean(axis=2)
    bright = gray > max(12.0, 0.1 * float(np.percentile(gray, 99)))
    image = Image.fromarray(bright.astype(np.uint8) * 255)
    bright = np.asarray(image.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))) > 0
    rows, cols = np.zeros_like(bright), np.zeros_like(bright)
    for i in np.flatnonzero(bright.any(axis=1)):
        on = np.flatnonzero(bright[i])
        rows[i, on[0] : on[-1] + 1] = True
    for j in np.flatnonzero(bright.any(axis=0)):
        on = np.flatnonzero(bright[:, j])
        cols[on[0] : on[-1] + 1, j] = True
    return rows & cols


def brain_mask(x: np.ndarray) -> np.ndarray:
    """The head with its outer ring (scalp and skull, SKULL_RING of its size) taken off."""
    head = head_mask(x)
    ring = int(round(SKULL_RING * np.sqrt(head.sum())))
    if ring < 1:
        return head
    image = Image.fromarray(head.astype(np.uint8) * 255)
    # MinFilter takes an odd size up to the image: an erosion by `ring` pixels each way, in steps of 3 x 3 at most
    # a few dozen wide (PIL's rank filters slow down with their size).
    size = 2 * ring + 1
    while size > 1:
        step = min(size, 9)
        image = image.filter(ImageFilter.MinFilter(step))
        size -= step - 1
    return np.asarray(image) > 0


def random_map(rng: np.random.Generator, size: int, grid: int = RANDOM_GRID) -> np.ndarray:
    cells = Image.fromarray(rng.random((grid, grid)).astype(np.float32), mode="F")
    return np.asarray(cells.resize((size, size), Image.BILINEAR), dtype=np.float32)


def _order(heat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel indices from the hottest down; equal values (a map's flat zero background) in random order."""
    ties = rng.random(heat.size)
    return np.lexsort((ties, -heat.ravel()))


def curves(
    input_probs, x: np.ndarray, heat: np.ndarray, label: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(deletion, insertion): the probability of `label` as the hottest pixels of `heat` are blacked out from x,
    and as they are revealed on a black image, at STEPS + 1 evenly spaced fractions."""
    h, w = x.shape[:2]
    order = _order(heat, rng)
    counts = np.round(np.linspace(0, h * w, STEPS + 1)).astype(int)
    flat = x.reshape(h * w, -1)
    batch = np.empty((2 * len(counts), h * w, flat.shape[1]), dtype=np.uint8)
    for k, n in enumerate(counts):
        batch[k] = flat
        batch[k, order[:n]] = 0
        batch[len(counts) + k] = 0
        batch[len(counts) + k, order[:n]] = flat[order[:n]]
    probs = np.asarray(input_probs(batch.reshape(-1, h, w, flat.shape[1])))[:, label]
    return probs[: len(counts)], probs[len(counts) :]


def area(curve: np.ndarray) -> float:
    """The area under a curve over [0, 1] sampled at evenly spaced points (trapezoids)."""
    return float(np.trapezoid(curve, dx=1 / (len(curve) - 1)))


@dataclass(frozen=True)
class ImageScore:
    label: int  # the true class
    curves: dict[str, np.ndarray]  # deletion, insertion, and each with a random map: STEPS + 1 probabilities
    heat_in_brain: float  # the share of the map's heat inside the brain
    peak_in_brain: bool  # whether the map's hottest pixel lies inside it

    def area(self, curve: str) -> float:
        """The area under one of its curves: deletion's is low, insertion's high, when the map's order finds the
        evidence first."""
        return area(self.curves[curve])


def score_image(predictor: Any, x: np.ndarray, label: int, rng: np.random.Generator) -> ImageScore:
    """One model input x (already cropped and sized as the model sees it) of true class `label`."""
    predicted = int(np.argmax(predictor.input_probs(x[None])[0]))
    heat = predictor.input_map(x)
    deletion, insertion = curves(predictor.input_probs, x, heat, predicted, rng)
    noise = random_map(rng, x.shape[0])
    deletion_random, insertion_random = curves(predictor.input_probs, x, noise, predicted, rng)
    brain = brain_mask(x)
    total = float(heat.sum())
    return ImageScore(
        label=label,
        curves={
            "deletion": deletion,
            "insertion": insertion,
            "deletion_random": deletion_random,
            "insertion_random": insertion_random,
        },
        heat_in_brain=float(heat[brain].sum()) / total if total > 0 else 0.0,
        peak_in_brain=bool(brain.ravel()[int(np.argmax(heat))]) if total > 0 else False,
    )


def summary(scores: list[ImageScore]) -> dict[str, Any]:
    """The means over all images, and the heat measures per true class."""

    def means(group: list[ImageScore]) -> dict[str, float]:
        return {
            "images": len(group),
            "heat_in_brain": round(float(np.mean([s.heat_in_brain for s in group])), 4),
            "peaks_in_brain": round(float(np.mean([s.peak_in_brain for s in group])), 4),
        }

    return {
        "images": len(scores),
        "deletion_auc": round(float(np.mean([s.area("deletion") for s in scores])), 4),
        "deletion_auc_random": round(float(np.mean([s.area("deletion_random") for s in scores])), 4),
        "insertion_auc": round(float(np.mean([s.area("insertion") for s in scores])), 4),
        "insertion_auc_random": round(float(np.mean([s.area("insertion_random") for s in scores])), 4),
        "deletion_beats_random": round(
            float(np.mean([s.area("deletion") < s.area("deletion_random") for s in scores])), 4
        ),
        "insertion_beats_random": round(
            float(np.mean([s.area("insertion") > s.area("insertion_random") for s in scores])), 4
        ),
        # The mean curves, at fractions 0, 1/STEPS, ..., 1 of the input hidden (deletion) or revealed (insertion).
        "curves": {
            name: [round(float(v), 4) for v in np.mean([s.curves[name] for s in scores], axis=0)]
            for name in ("deletion", "deletion_random", "insertion", "insertion_random")
        },
        **means(scores),
        "per_class": {
            CLASSES[c]: means(group) for c in range(len(CLASSES)) if (group := [s for s in scores if s.label == c])
        },
    }
