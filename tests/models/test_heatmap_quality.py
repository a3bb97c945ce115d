"""The heatmap measures on a model whose evidence is known: a synthetic class decided by one bright patch. A map on
the patch must beat a random map on deletion and insertion, a map on everything else must not; the occlusion map finds the
patch; heat on the skull ring is outside the brain, heat in the middle of the head inside."""

import numpy as np
import pytest

from models.evaluation.heatmap_quality import area, brain_mask, curves, random_map, score_image, summary
from models.inference.predictor import OCCLUSION_GRID, _normalise_cam, occlusion_map, occlusion_windows

SIZE = 64
PATCH = (slice(40, 56), slice(8, 24))  # rows, columns of the evidence


class PatchModel:
    """Class 1 ("tumour") exactly as bright as the patch is: the only evidence in the image."""

    framework = "keras"
    crop = False

    def input_probs(self, inputs: np.ndarray) -> np.ndarray:
        brightness = np.asarray(inputs, dtype=np.float64)[:, PATCH[0], PATCH[1]].mean(axis=(1, 2, 3)) / 255
        logit = 12 * (brightness - 0.3)
        p = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p, p, np.zeros_like(p), np.zeros_like(p)], axis=1)

    def input_map(self, x: np.ndarray) -> np.ndarray:
        return _normalise_cam(occlusion_map(x, self.input_probs), x, False)


def patch_image() -> np.ndarray:
    x = np.full((SIZE, SIZE, 3), 60, dtype=np.uint8)
    x[PATCH] = 230
    return x


def map_on(rows: slice, cols: slice) -> np.ndarray:
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    heat[rows, cols] = 1
    return heat


def test_every_cell_lies_in_exactly_four_occlusion_windows() -> None:
    cover = np.zeros((OCCLUSION_GRID, OCCLUSION_GRID), dtype=int)
    for i, j, top, bottom, left, right in occlusion_windows(224):
        cover[max(i, 0) : i + 2, max(j, 0) : j + 2] += 1
        assert 0 <= top < bottom <= 224 and 0 <= left < right <= 224
    assert (cover == 4).all()


def test_the_occlusion_map_is_hottest_on_the_evidence() -> None:
    cam = occlusion_map(patch_image(), PatchModel().input_probs)
    assert cam.shape == (OCCLUSION_GRID, OCCLUSION_GRID)
    # The patch covers rows 40-55 and columns 8-23 of 64: cells 5-6 down, 1-2 across.
    hottest = np.unravel_index(int(np.argmax(cam)), cam.shape)
    assert hottest[0] in (5, 6) and hottest[1] in (1, 2)
    far = cam[:3, 5:]
    assert np.abs(far).max() == 0.0  # hiding what the model ignores changes nothing


def test_a_map_on_the_evidence_beats_a_random_one_and_a_map_off_it_does_not() -> None:
    model, x, rng = PatchModel(), patch_image(), np.random.default_rng(0)
    on = curves(model.input_probs, x, map_on(*PATCH), 1, rng)
    off = curves(model.input_probs, x, 1 - map_on(*PATCH), 1, rng)  # everything but the evidence first
    noise = [curves(model.input_probs, x, random_map(rng, SIZE), 1, rng) for _ in range(5)]
    random_deletion = np.mean([area(d) for d, _ in noise])
    random_insertion = np.mean([area(i) for _, i in noise])
    assert area(on[0]) < random_deletion - 0.2 and area(on[1]) > random_insertion + 0.2
    assert area(off[0]) > random_deletion and area(off[1]) < random_insertion
    # Both curves start at the image (deletion) or at black (insertion) and end at the other.
    assert on[0][0] == pytest.approx(model.input_probs(x[None])[0, 1])
    assert on[1][0] == pytest.approx(model.input_probs(np.zeros_like(x)[None])[0, 1])
    assert on[0][-1] == pytest.approx(on[1][0]) and on[1][-1] == pytest.approx(on[0][0])


def test_score_image_scores_the_occlusion_map_of_the_patch_model_as_faithful() -> None:
    scores = [score_image(PatchModel(), patch_image(), 1, np.random.default_rng(seed)) for seed in range(3)]
    figures = summary(scores)
    assert figures["deletion_beats_random"] == 1.0 and figures["insertion_beats_random"] == 1.0
    assert figures["deletion_auc"] < figures["deletion_auc_random"]
    assert figures["per_class"]["meningioma"]["images"] == 3


def head_image(size: int = 128) -> np.ndarray:
    """A bright skull ring (radius 50-60) around a grey brain, on black."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    x = np.zeros((size, size, 3), dtype=np.uint8)
    x[r < 60] = 220
    x[r < 50] = 110
    return x


def test_the_brain_is_the_head_without_its_skull_ring() -> None:
    x = head_image()
    brain = brain_mask(x)
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 64, xx - 64)
    assert brain[r < 40].all()
    assert not brain[r > 56].any()
    ring_heat = (r > 52) & (r < 60)
    middle_heat = r < 20
    assert brain[ring_heat].mean() < 0.25 and brain[middle_heat].mean() == 1.0


def test_black_background_is_not_run_again_and_gets_no_heat() -> None:
    x = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    x[PATCH] = 230
    seen: list[int] = []
    model = PatchModel()

    def counted(inputs: np.ndarray) -> np.ndarray:
        seen.append(len(inputs))
        return model.input_probs(inputs)

    cam = occlusion_map(x, counted)
    # The patch spans 2 x 2 cells (rows 5-6, columns 1-2): the 3 x 3 windows holding any of them, and the input.
    assert seen == [1 + 9]
    assert cam[5:7, 1:3].min() > 0 and np.count_nonzero(cam) == 16  # the cells of those windows: rows 4-7, columns 0-3
