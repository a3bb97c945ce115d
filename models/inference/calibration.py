"""Temperature scaling: one number per model that makes its confidence mean what it says (docs/design/calibration.md)."""

import math
from typing import Any

import numpy as np

ECE_BINS = 15


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = np.clip(np.asarray(probs)[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.log(p).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    probs = np.asarray(probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to the first bin.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] with the lowest NLL: golden-section search on log T (NLL is unimodal in it)."""
    lo, hi = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return nll(apply_temperature(probs, math.exp(log_t)), labels)

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(math.exp((lo + hi) / 2))


def calibration_report(probs: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """The temperature fitted on all the images, with ECE and NLL before and after (cross-fitted)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    halves = np.zeros(len(labels), dtype=bool)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):  # stratified halves
        idx = rng.permutation(np.flatnonzero(labels == c))
        halves[idx[: len(idx) // 2]] = True
    after = np.empty_like(probs)
    for part in (halves, ~halves):
        t = fit_temperature(probs[~part], labels[~part]) if (~part).any() else 1.0
        after[part] = apply_temperature(probs[part], t)
    return {
        "temperature": fit_temperature(probs, labels),
        "ece_before": expected_calibration_error(probs, labels),
        "nll_before": nll(probs, labels),
        "ece_after": expected_calibration_error(after, labels),
        "nll_after": nll(after, labels),
        "bins": ECE_BINS,
        "images": int(len(labels)),
    }
