"""The out-of-distribution statistics: fitting, thresholds, and the tie between a model file and its statistics."""

from pathlib import Path

import numpy as np
import pytest

from models.evaluation.ood import (
    OodStats,
    OodUnavailable,
    _caught,
    cross_fitted_scores,
    fit,
    fit_gaussian,
    ledoit_wolf,
    load_stats,
    save_stats,
    stats_path,
)
from models.nets.cnn import FEATURES


def two_clouds(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of correlated Gaussian features, 12 dimensions."""
    labels = rng.integers(0, 2, n)
    mixing = np.random.default_rng(7).normal(size=(12, 12))
    return rng.normal(size=(n, 12)) @ mixing + 4.0 * labels[:, None], labels


def test_the_threshold_lets_unseen_images_of_the_kind_through_and_flags_far_ones() -> None:
    x, y = two_clouds(np.random.default_rng(0), 4000)
    stats, details = fit(x, y, model_sha256="a" * 64, percentile=99.5)
    fresh, _ = two_clouds(np.random.default_rng(1), 4000)
    assert (stats.scores(fresh) > stats.threshold).mean() < 0.01
    # Scores are squared Mahalanobis distances: on Gaussian features the threshold sits near the chi-square
    # quantile (28.3 for 12 dimensions at 99.5 %), and the fit's own rows are refused about as often.
    assert 25 < stats.threshold < 32 and details["refused_in_sample"] < 0.01
    assert (stats.scores(fresh * 3) > stats.threshold).mean() > 0.9
    assert (stats.scores(np.zeros((1, 12)) + 100) > stats.threshold).all()


def test_the_threshold_is_the_percentile_of_the_held_out_scores_and_only_scores_above_it_count_as_refused() -> None:
    x, y = two_clouds(np.random.default_rng(0), 1000)
    stats, details = fit(x, y, model_sha256="a" * 64, percentile=99.0)
    held_out = cross_fitted_scores(x, y)
    assert stats.threshold == np.percentile(held_out, 99.0) == details["held_out_thresholds"]["99.0"]
    assert details["shrinkage"] == fit_gaussian(x, y)[1]
    assert details["refused_in_sample"] == (stats.scores(x) > stats.threshold).mean()


def test_scores_are_squared_distances_to_the_nearest_class_mean_and_a_score_at_the_threshold_passes() -> None:
    # Two features standardised by (1, 2) and (2, 4), class means at 0 and at 3 on the first, the second
    # feature weighed a quarter: every score below is worked out by hand.
    stats = OodStats(
        "a" * 64,
        center=np.array([1.0, 2.0]),
        scale=np.array([2.0, 4.0]),
        class_means=np.array([[0.0, 0.0], [3.0, 0.0]]),
        precision=np.diag([1.0, 0.25]),
        threshold=4.0,
        percentile=99.5,
    )
    standardised = np.array([[0.0, 0.0], [3.0, 1.0], [0.0, 4.0], [-1.999, 0.0], [-2.0, 0.0], [-2.001, 0.0]])
    scores = stats.scores(stats.center + stats.scale * standardised)
    assert scores == pytest.approx([0.0, 0.25, 4.0, 1.999**2, 4.0, 2.001**2], abs=1e-12)
    names = ["mean", "near the second", "at, on the second feature", "just below", "at", "just above"]
    assert _caught(scores, stats.threshold, names) == {
        "images": 6,
        "caught": 1,
        "rate": pytest.approx(1 / 6),
        "lowest_score_over_threshold": 0.0,
        "missed": names[:5],
    }
    caught = _caught(scores[3:], stats.threshold, names[3:])
    assert caught["lowest_score_over_threshold"] == pytest.approx(1.999**2 / 4)
    assert (caught["caught"], caught["missed"]) == (1, ["just below", "at"])
    # DICOM probes are named for the modality their header gives: one that is not MR is caught whatever its score.
    dicom = ["CT head", "MR knee", "no modality given", "US abdomen"]
    assert _caught(np.zeros(4), 4.0, dicom, dicom=True)["missed"] == ["MR knee", "no modality given"]
    assert _caught(np.zeros(4), 4.0, dicom)["missed"] == dicom
    assert _caught(np.zeros(0), 4.0, []) == {
        "images": 0,
        "caught": 0,
        "rate": None,
        "lowest_score_over_threshold": None,
        "missed": [],
    }


def test_duplicates_held_out_with_their_copies_set_the_threshold_as_unseen_images_would() -> None:
    # 400 distinct images in 3 near-identical copies each, 60 features: with copies split across folds a
    # held-out copy scores as seen, and the threshold ends up refusing unseen images of the kind too often.
    def clouds(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        return rng.normal(size=(n, 60)) @ np.random.default_rng(7).normal(size=(60, 60)) + 4.0 * labels[:, None], labels

    rng = np.random.default_rng(0)
    base, y = clouds(rng, 400)
    x = np.repeat(base, 3, axis=0) + rng.normal(scale=0.01, size=(1200, 60))
    labels, groups = np.repeat(y, 3), np.repeat(np.arange(400), 3)
    fresh, _ = clouds(np.random.default_rng(1), 4000)
    mixed, _ = fit(x, labels, model_sha256="a" * 64, percentile=99.5)
    grouped, _ = fit(x, labels, model_sha256="a" * 64, percentile=99.5, groups=groups)
    # The folds are seeded: fitting again gives the same threshold.
    assert fit(x, labels, model_sha256="a" * 64, percentile=99.5, groups=groups)[0].threshold == grouped.threshold
    assert grouped.threshold > 1.1 * mixed.threshold
    assert (grouped.scores(fresh) > grouped.threshold).mean() < 0.01
    assert (mixed.scores(fresh) > mixed.threshold).mean() > 0.02


def test_ledoit_wolf_shrinks_more_when_rows_are_few_for_the_dimensions() -> None:
    rng = np.random.default_rng(0)
    few, many = ledoit_wolf(rng.normal(size=(30, 60))), ledoit_wolf(rng.normal(size=(6000, 60)))
    assert 0.0 <= many < few <= 1.0


def test_statistics_belong_to_the_model_file_they_were_fitted_for(tmp_path: Path) -> None:
    x, y = two_clouds(np.random.default_rng(0), 500)
    stats, _ = fit(x, y, model_sha256="a" * 64)
    model = tmp_path / "cnn.pth"
    save_stats(stats, stats_path(model))
    assert stats_path(model).name == "cnn.ood.npz"
    loaded = load_stats(model, "a" * 64)
    assert loaded.threshold == stats.threshold and loaded.percentile == 99.5
    assert np.allclose(loaded.scores(x[:5]), stats.scores(x[:5]), rtol=1e-4)
    # Stored as float32, half the file; read back as float64 for the scores.
    with np.load(stats_path(model)) as stored:
        assert {stored[k].dtype for k in ("center", "scale", "class_means", "precision")} == {np.dtype(np.float32)}
    assert {a.dtype for a in (loaded.center, loaded.scale, loaded.class_means, loaded.precision)} == {
        np.dtype(np.float64)
    }
    seen = []
    load_stats(model, "a" * 64, check=lambda *args: seen.append(args))
    assert seen == [(stats_path(model), stats_path(model).read_bytes(), False)]
    with pytest.raises(OodUnavailable) as other:
        load_stats(model, "b" * 64)
    assert str(other.value) == (
        "cnn.ood.npz was fitted for another version of cnn.pth (sha256 aaaaaaaaaaaa…, this file's is bbbbbbbbbbbb…); "
        f"fit them with: python -m models ood --model {model}"
    )
    with pytest.raises(OodUnavailable, match="no out-of-distribution statistics were fitted for other.pth"):
        load_stats(tmp_path / "other.pth", "a" * 64)


def test_statistics_that_need_unpickling_or_are_not_an_npz_are_refused_unread(tmp_path: Path) -> None:
    model = tmp_path / "cnn.pth"
    # A file that would run code when read: an object array is stored pickled.
    np.savez(stats_path(model), model_sha256=np.array("a" * 64), center=np.array([{"not": "numbers"}], dtype=object))
    with pytest.raises(OodUnavailable, match=r"^cnn.ood.npz cannot be read \(.*pickle.*\); fit them with: python -m"):
        load_stats(model, "a" * 64)
    stats_path(model).write_bytes(b"not an npz")
    with pytest.raises(
        OodUnavailable, match=r"^cnn.ood.npz cannot be read \(.*\); fit them with: python -m models ood"
    ):
        load_stats(model, "a" * 64)


def test_the_cnn_gives_one_feature_vector_per_image(tmp_path: Path) -> None:
    import torch

    from models.inference.predictor import TorchPredictor
    from models.nets.cnn import TumorCNN, save_checkpoint

    torch.manual_seed(0)
    predictor = TorchPredictor(save_checkpoint(tmp_path / "cnn.pth", TumorCNN(), extra={}))
    images = [
        np.zeros((100, 80, 3), np.uint8),
        np.full((300, 300, 3), 200, np.uint8),
        np.eye(50, dtype=np.uint8)[..., None].repeat(3, 2),
    ]
    assert predictor.features(images).shape == (3, FEATURES)
    assert predictor.features([]).shape == (0, FEATURES)
