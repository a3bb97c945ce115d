"""The out-of-distribution check: does an image look like the brain MRI slices the CNN learned from?

A Mahalanobis distance of the CNN's features, its threshold fitted on held-out folds of the training side
(`python -m models ood`; docs/design/ood.md).
"""

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data.dataset import Item, index_items
from models.data.preprocessing import load_rgb
from models.data.split import config_split
from models.inference.model_meta import OpenCheck, file_sha256

PERCENTILE = 99.5
FOLDS = 5
# The trade-off the report lays out: each percentile's threshold, its false refusals and its catches.
PERCENTILES_SHOWN = (99.0, 99.5, 99.7, 99.8, 99.9)
CHUNK = 64  # images decoded and passed through the network together


def header_refusal(modality: str | None) -> str | None:
    """Why a DICOM file's own header says it is not an MR image (CT, CR, US...); None where it says MR or
    nothing. Checked beside the score: a scanner's word is surer than any distance."""
    said = (modality or "").strip().upper()
    if not said or said == "MR":
        return None
    return f"its DICOM header gives the modality as {said}, not MR"


class OodUnavailable(ValueError):
    """No statistics fitted for this model file; the message says why and how to fit them."""


@dataclass(frozen=True)
class OodStats:
    """What the check needs at prediction time, for one model file."""

    model_sha256: str
    center: np.ndarray  # D: the training side's feature means...
    scale: np.ndarray  # D: ...and spreads, which put every feature on the same scale
    class_means: np.ndarray  # C x D, standardised
    precision: np.ndarray  # D x D: the inverse of the shrunk shared covariance
    threshold: float
    percentile: float  # of the training side's held-out scores that the threshold sits at

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each feature row to the nearest class mean."""
        z = (np.asarray(features, dtype=np.float64) - self.center) / self.scale
        return nearest_distance(z, self.class_means, self.precision)


def nearest_distance(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = z[:, None, :] - means[None, :, :]  # N x C x D
    return ((diff @ precision) * diff).sum(axis=2).min(axis=1)


def ledoit_wolf(residuals: np.ndarray) -> float:
    """The Ledoit-Wolf shrinkage intensity in [0, 1] for the covariance of centred rows (as scikit-learn)."""
    n, d = residuals.shape
    squared = residuals**2
    variances = squared.sum(axis=0) / n
    mu = variances.sum() / d
    beta_ = (squared.T @ squared).sum()
    delta_ = ((residuals.T @ residuals) ** 2).sum() / n**2
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * variances.sum() + d * mu**2) / d
    return float(min(beta, delta) / delta) if delta > 0 else 1.0


def fit_gaussian(features: np.ndarray, labels: np.ndarray) -> tuple[OodStats, float]:
    """Class means and a shrunk shared covariance (threshold left at infinity), and the shrinkage used."""
    x = np.asarray(features, dtype=np.float64)
    center, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - center) / scale
    classes = np.unique(labels)
    means = np.stack([z[labels == c].mean(axis=0) for c in classes])
    residuals = z - means[np.searchsorted(classes, labels)]
    shrinkage = ledoit_wolf(residuals)
    cov = residuals.T @ residuals / len(z)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return OodStats("", center, scale, means, np.linalg.inv(cov), float("inf"), 100.0), shrinkage


def cross_fitted_scores(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    folds: int = FOLDS,
    seed: int = 0,
) -> np.ndarray:
    """Each row's score under a fit on the other folds: what an unseen image of the same kind would get.

    With `groups` (duplicate-group ids), each group falls in one fold, as the validation split keeps each group
    on one side: a held-out image whose near-copy sat in the fit would score as seen, and set the threshold low.
    """
    if groups is None:
        fold = np.random.default_rng(seed).permutation(len(labels)) % folds
    else:
        ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
        fold = (np.random.default_rng(seed).permutation(len(ids)) % folds)[inverse]
    scores = np.empty(len(labels))
    for k in range(folds):
        stats, _ = fit_gaussian(features[fold != k], labels[fold != k])
        scores[fold == k] = stats.scores(features[fold == k])
    return scores


def fit(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    model_sha256: str,
    percentile: float = PERCENTILE,
    groups: np.ndarray | None = None,
) -> tuple[OodStats, dict[str, Any]]:
    """The statistics of the training side's features, with the threshold at `percentile` of its held-out scores
    (cross-fitted with each duplicate group in one fold where `groups` is given)."""
    held_out = cross_fitted_scores(features, labels, groups=groups)
    stats, shrinkage = fit_gaussian(features, labels)
    threshold = float(np.percentile(held_out, percentile))
    stats = OodStats(model_sha256, stats.center, stats.scale, stats.class_means, stats.precision, threshold, percentile)
    details = {
        "shrinkage": shrinkage,
        "held_out_thresholds": {str(p): float(np.percentile(held_out, p)) for p in PERCENTILES_SHOWN},
        "refused_in_sample": float((stats.scores(features) > threshold).mean()),
    }
    return stats, details


def stats_path(model_path: str | Path) -> Path:
    """Where a model file's statistics live: cnn_default.pth -> cnn_default.ood.npz."""
    return Path(model_path).with_suffix(".ood.npz")


def report_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".ood.json")


def save_stats(stats: OodStats, path: str | Path) -> None:
    """Write the statistics; as float32, plenty for the scores and half the file (the 480 x 480 precision matrix
    is most of it)."""
    path = Path(path)
    with open(path.with_suffix(".tmp"), "wb") as fh:
        np.savez_compressed(
            fh,
            model_sha256=np.array(stats.model_sha256),
            center=stats.center.astype(np.float32),
            scale=stats.scale.astype(np.float32),
            class_means=stats.class_means.astype(np.float32),
            precision=stats.precision.astype(np.float32),
            threshold=np.array(stats.threshold),
            percentile=np.array(stats.percentile),
        )
    path.with_suffix(".tmp").replace(path)


def load_stats(model_path: str | Path, model_sha256: str, check: OpenCheck | None = None) -> OodStats:
    """The statistics fitted for this very model file; OodUnavailable when there are none, or they belong to
    another file (a model retrained or replaced under the same name). `check` sees their bytes first."""
    path = stats_path(model_path)
    how = f"fit them with: python -m models ood --model {model_path}"
    if not path.is_file():
        raise OodUnavailable(f"no out-of-distribution statistics were fitted for {Path(model_path).name}; {how}")
    data = path.read_bytes()
    if check is not None:
        check(path, data, False)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            stats = OodStats(
                str(f["model_sha256"]),
                f["center"].astype(np.float64),
                f["scale"].astype(np.float64),
                f["class_means"].astype(np.float64),
                f["precision"].astype(np.float64),
                float(f["threshold"]),
                float(f["percentile"]),
            )
    except (OSError, ValueError, KeyError) as exc:
        raise OodUnavailable(f"{path.name} cannot be read ({exc}); {how}") from exc
    if stats.model_sha256 != model_sha256:
        raise OodUnavailable(
            f"{path.name} was fitted for another version of {Path(model_path).name} "
            f"(sha256 {stats.model_sha256[:12]}…, this file's is {model_sha256[:12]}…); {how}"
        )
    return stats


def _features(predictor: Any, images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([predictor.features(images[i : i + CHUNK]) for i in range(0, max(len(images), 1), CHUNK)])


def _item_features(predictor: Any, items: list[Item]) -> np.ndarray:
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    return np.concatenate([predictor.features([load_rgb(it.path) for it in chunk]) for chunk in chunks])


def _probe_modality(name: str) -> str | None:
    """The modality a DICOM probe's name starts with (models/evaluation/ood_probes.py names them so)."""
    first = name.split(" ", 1)[0]
    return None if first == "no" else first


def _caught(scores: np.ndarray, threshold: float, names: list[str], *, dicom: bool = False) -> dict[str, Any]:
    flagged = scores > threshold
    if dicom:  # the header rule runs beside the score on DICOM files
        flagged = flagged | np.array([header_refusal(_probe_modality(n)) is not None for n in names], dtype=bool)
    return {
        "images": len(scores),
        "caught": int(flagged.sum()),
        "rate": float(flagged.mean()) if len(scores) else None,
        "lowest_score_over_threshold": float(scores.min() / threshold) if len(scores) else None,
        "missed": [name for name, f in zip(names, flagged) if not f],
    }


def fit_command(model: str, data: str | None, percentile: float, ood_images: list[str]) -> dict[str, Any]:
    """Fit, measure and write the statistics and the report beside the model; returns the report."""
    from models.evaluation.ood_probes import families
    from models.inference.predictor import TorchPredictor

    predictor = TorchPredictor(model)
    cfg = predictor.meta["config"]
    train, val = config_split(cfg, data)
    started = time.perf_counter()
    x_train = _item_features(predictor, train)
    ms_per_image = 1000 * (time.perf_counter() - started) / len(train)
    x_val = _item_features(predictor, val)
    y_train = np.array([it.label for it in train])
    root = Path(data or cfg["data_dir"])
    groups = np.array(index_items(root, train).groups)
    if len(groups) != len(train):
        raise ValueError(f"some training images under {root} could not be read again; fit once they can")
    stats, details = fit(x_train, y_train, model_sha256=file_sha256(model), percentile=percentile, groups=groups)
    val_scores = stats.scores(x_val)
    val_names = [str(it.path.relative_to(root)) for it in val]
    probe_scores = {}
    for name, probes in families(extra_files=ood_images).items():
        probe_scores[name] = (stats.scores(_features(predictor, [rgb for _, rgb in probes])), [n for n, _ in probes])
    table = []
    for p, t in details["held_out_thresholds"].items():
        row = {"percentile": float(p), "threshold": t, "validation_refused": float((val_scores > t).mean())}
        table.append(
            row
            | {
                name: _caught(s, t, names, dicom=name.startswith("DICOM"))["rate"]
                for name, (s, names) in probe_scores.items()
            }
        )
    refused = val_scores > stats.threshold
    report = {
        "model": {"file": Path(model).name, "sha256": stats.model_sha256},
        "method": (
            "Squared Mahalanobis distance to the nearest class mean (shared covariance, Ledoit-Wolf shrinkage) of "
            "the CNN's feature summary: per-channel means and spreads after each block's BatchNorm and the "
            "penultimate layer, on the model's own preprocessing, one forward pass without the mirrored copy; "
            "and a DICOM file whose header names a modality other than MR is refused whatever its score"
        ),
        "features": int(x_train.shape[1]),
        "shrinkage": details["shrinkage"],
        "threshold": stats.threshold,
        "threshold_rule": (
            f"the {percentile}th percentile of the training side's scores, each image scored by a fit on the "
            f"other {FOLDS - 1} of {FOLDS} folds, each group of exact or near duplicates in one fold"
        ),
        "split": {
            "data_dir": str(root),
            "val_fraction": cfg.get("val_fraction", 0.15),
            "seed": cfg.get("seed", 42),
            "train": len(train),
            "val": len(val),
        },
        "training_refused_in_sample": details["refused_in_sample"],
        "validation": {
            "images": len(val),
            "refused": int(refused.sum()),
            "rate": float(refused.mean()),
            "refused_files": [n for n, r in zip(val_names, refused) if r],
        },
        "families": {
            name: _caught(s, stats.threshold, names, dicom=name.startswith("DICOM"))
            for name, (s, names) in probe_scores.items()
        },
        "by_percentile": table,
        "decode_and_features_ms_per_image": ms_per_image,
        "ood_images": list(ood_images),
    }
    save_stats(stats, stats_path(model))
    report_path(model).write_text(json.dumps(report, indent=2) + "\n")
    return report
