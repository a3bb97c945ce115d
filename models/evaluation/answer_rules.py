"""Choosing how both models make one answer: each candidate rule (models/inference/combination.py) fitted and
scored by cross-fitting over the validation split, in folds that keep near-duplicate images together.

Every image is scored by a rule fitted on the other folds, and calibrated by a temperature fitted on the other
folds' held-out answers, so no figure is of an image the rule or its temperature saw.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.inference.calibration import apply_temperature, fit_temperature, nll
from models.inference.combination import RULES, Combination, combine, log_features, softmax

FOLDS = 5
SEED = 0
WEIGHT_GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
# L2 penalty of the stacking model's coefficients, against the mean log-loss.
STACK_L2 = 0.01


def grouped_folds(labels: np.ndarray, groups: np.ndarray, k: int = FOLDS, seed: int = SEED) -> np.ndarray:
    """The fold of each image: a duplicate group's images all in one fold, each class spread evenly.

    Groups go largest first, each to the fold holding the fewest images of its class so far (ties drawn with
    the seed)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.unique(groups))
    members = {g: np.flatnonzero(groups == g) for g in ids}
    order = sorted(ids, key=lambda g: -len(members[g]))  # stable: equal sizes keep the drawn order
    n_classes = int(labels.max()) + 1
    load = np.zeros((k, n_classes))
    fold = np.empty(len(labels), dtype=int)
    for g in order:
        cls = np.bincount(labels[members[g]], minlength=n_classes).argmax()
        least = np.flatnonzero(load[:, cls] == load[:, cls].min())
        f = int(rng.choice(least))
        fold[members[g]] = f
        load[f, cls] += len(members[g])
    return fold


def _fit_weight(cnn: np.ndarray, mobilenet: np.ndarray, y: np.ndarray) -> float:
    """The CNN's weight on the grid whose average has the lowest log-loss."""
    losses = [nll(combine("weighted", {"cnn_weight": w}, cnn, mobilenet), y) for w in WEIGHT_GRID]
    return float(WEIGHT_GRID[int(np.argmin(losses))])


def _fit_class_weights(cnn: np.ndarray, mobilenet: np.ndarray, y: np.ndarray, passes: int = 3) -> list[float]:
    """One CNN weight per class on the grid, by coordinate descent on the log-loss from the best single weight."""
    weights = [_fit_weight(cnn, mobilenet, y)] * cnn.shape[1]
    for _ in range(passes):
        for c in range(len(weights)):
            losses = []
            for w in WEIGHT_GRID:
                trial = [*weights[:c], w, *weights[c + 1 :]]
                losses.append(nll(combine("weighted_per_class", {"cnn_weight": trial}, cnn, mobilenet), y))
            weights[c] = float(WEIGHT_GRID[int(np.argmin(losses))])
    return weights


def _fit_stacked(cnn: np.ndarray, mobilenet: np.ndarray, y: np.ndarray, l2: float = STACK_L2) -> list[list[float]]:
    """Multinomial logistic regression on both models' log-probabilities (L2 on the coefficients), by Newton's
    method from the plain product of the two models (the average of their log-probabilities)."""
    x = log_features(cnn, mobilenet)
    n, d = x.shape
    k = cnn.shape[1]
    onehot = np.eye(k)[y]
    penalty = np.full(d, l2)
    penalty[-1] = 1e-6  # the constant's column: barely held, only to keep the system solvable
    w = np.zeros((d, k))
    w[:k] = w[k : 2 * k] = np.eye(k) / 2

    def loss(w: np.ndarray) -> float:
        logits = x @ w
        logits -= logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1))
        return float((lse - (logits * onehot).sum(axis=1)).mean() + 0.5 * (penalty[:, None] * w**2).sum())

    current = loss(w)
    for _ in range(50):
        p = softmax(x @ w)
        grad = x.T @ (p - onehot) / n + penalty[:, None] * w
        # Hessian of the mean log-loss over the (feature, class) coefficients, flattened row-major.
        cov = np.einsum("ik,kl->ikl", p, np.eye(k)) - np.einsum("ik,il->ikl", p, p)
        hess = np.einsum("ia,ib,ikl->akbl", x, x, cov).reshape(d * k, d * k) / n
        hess += np.diag(np.repeat(penalty, k))
        step = np.linalg.solve(hess, grad.reshape(-1)).reshape(d, k)
        size = 1.0
        while size > 1e-4 and loss(w - size * step) > current:
            size /= 2
        w, before, current = w - size * step, current, loss(w - size * step)
        if before - current < 1e-10:
            break
    return w.tolist()


def fit(name: str, cnn: np.ndarray, mobilenet: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The rule's parameters fitted on these images."""
    if name == "weighted":
        return {"cnn_weight": _fit_weight(cnn, mobilenet, y)}
    if name == "weighted_per_class":
        return {"cnn_weight": _fit_class_weights(cnn, mobilenet, y)}
    if name == "stacked":
        return {"coefficients": _fit_stacked(cnn, mobilenet, y)}
    return {}


@dataclass(frozen=True)
class CrossFit:
    """A rule's held-out answers on every image: before calibration, and calibrated."""

    name: str
    raw: np.ndarray
    calibrated: np.ndarray


def cross_fit(name: str, cnn: np.ndarray, mobilenet: np.ndarray, y: np.ndarray, folds: np.ndarray) -> CrossFit:
    """Each fold answered by the rule fitted on the others, then calibrated by a temperature fitted on the
    others' held-out answers."""
    raw = np.empty_like(cnn, dtype=np.float64)
    for f in np.unique(folds):
        out = folds == f
        params = fit(name, cnn[~out], mobilenet[~out], y[~out])
        raw[out] = combine(name, params, cnn[out], mobilenet[out])
    calibrated = np.empty_like(raw)
    for f in np.unique(folds):
        out = folds == f
        calibrated[out] = apply_temperature(raw[out], fit_temperature(raw[~out], y[~out]))
    return CrossFit(name, raw, calibrated)


def choose(
    cnn: np.ndarray, mobilenet: np.ndarray, y: np.ndarray, folds: np.ndarray
) -> tuple[Combination, dict[str, CrossFit]]:
    """The rule with the most images right when cross-fitted (a tie to the simpler), fitted again on every image,
    with the temperature fitted on its held-out answers; and every candidate's held-out answers."""
    fits = {name: cross_fit(name, cnn, mobilenet, y, folds) for name in RULES}
    right = {name: int((fits[name].raw.argmax(axis=1) == y).sum()) for name in RULES}
    best = max(RULES, key=lambda name: (right[name], -RULES.index(name)))
    temperature = fit_temperature(fits[best].raw, y)
    return Combination(best, fit(best, cnn, mobilenet, y), temperature), fits
