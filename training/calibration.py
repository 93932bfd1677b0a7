"""Calibration of out-of-fold predictions: none, a temperature, or Platt scaling, each fitted by
negative log-likelihood on N×V margins (patches × TTA views), and chosen by cross-fitting across
folds so that a two-parameter fit cannot win on the very predictions it is scored on.

The probabilities here are the shipped model's (amf.predict applies the card's ``calibration`` to
each view, then averages), so what is fitted is what ships.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from amf.metrics import expected_calibration_error


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def calibrated_probs(margins: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(atypical) as the shipped model computes it: the mean over views of softmax(logits / T)."""
    return _sigmoid(margins / temperature).mean(axis=1)


def nll(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of binary labels ``y`` under probabilities ``p``."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


TEMPERATURE_RANGE = (0.05, 20.0)  # the search's ends; a fit that stops at one is a warning, not a calibration


def temperature_at_edge(t: float) -> bool:
    """A fitted temperature within a few grid steps of either end of :data:`TEMPERATURE_RANGE`, where the
    search stopped rather than found a minimum: the out-of-fold margins barely inform the fit."""
    lo, hi = TEMPERATURE_RANGE
    return not lo * 1.2 < t < hi * 0.95


def fit_temperature(margins: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood: a log-spaced grid, then golden-section."""
    y = y.astype(np.float64)
    grid = np.exp(np.linspace(*np.log(TEMPERATURE_RANGE), 121))
    losses = [nll(y, calibrated_probs(margins, t)) for t in grid]
    i = int(np.argmin(losses))
    last = len(grid) - 1
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, last)])
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(y, calibrated_probs(margins, math.exp(a))) <= nll(y, calibrated_probs(margins, math.exp(b))):
            hi = b
        else:
            lo = a
    return float(math.exp((lo + hi) / 2))


CALIBRATIONS = ("none", "temperature", "platt")
CALIBRATION_RULE = ("the lowest cross-fitted out-of-fold NLL: each fold's predictions scored under the calibration "
                    "fitted on the other folds' predictions")


def fit_platt(margins: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's scale and bias minimising the negative log-likelihood of the views' mean of
    sigmoid(scale · margin + bias). The scale is fitted as its logarithm, so it stays positive: a
    calibration may reshape the confidence but never swap the classes. The targets are Platt's (1999)
    smoothed ones, (n₊ + 1)/(n₊ + 2) and 1/(n₋ + 2), as scikit-learn's sigmoid calibration uses: on
    margins that separate the classes, 0/1 targets drive the scale to infinity and every confidence
    to 0 or 1; these keep it finite and, on thousands of patches, move nothing else."""
    import torch  # the inference side reads the result without torch's optimisers

    m = torch.as_tensor(margins, dtype=torch.float64)
    positives = int(np.sum(y == 1))
    negatives = len(y) - positives
    target = torch.as_tensor(np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2)),
                             dtype=torch.float64)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_scale, bias], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    log_views = math.log(m.shape[1])

    def nll() -> torch.Tensor:
        # log P and log(1 - P) of the views' mean of sigmoids, from log-sigmoids: a clamped P would pass
        # no gradient where the margins saturate it (|scale · margin| > ~28), and the fit would not move
        optimiser.zero_grad()
        z = log_scale.exp() * m + bias
        log_p = torch.logsumexp(torch.nn.functional.logsigmoid(z), dim=1) - log_views
        log_q = torch.logsumexp(torch.nn.functional.logsigmoid(-z), dim=1) - log_views
        loss = -(target * log_p + (1 - target) * log_q).mean()
        loss.backward()
        return loss

    optimiser.step(nll)
    return float(log_scale.detach().exp()), float(bias.detach())


def fit_calibration(margins: np.ndarray, y: np.ndarray, kind: str) -> dict[str, Any] | None:
    """The card's ``calibration`` of one kind, fitted on N×V margins (``none``: None)."""
    if kind == "none":
        return None
    if kind == "temperature":
        return {"kind": "temperature", "temperature": fit_temperature(margins, y)}
    if kind == "platt":
        scale, bias = fit_platt(margins, y)
        return {"kind": "platt", "scale": scale, "bias": bias}
    raise ValueError(f"unknown calibration {kind!r}; choose from {CALIBRATIONS}")


def member_probs(margins: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """P(atypical) of single members as the shipped model computes it (amf.predict.calibrated, then the
    views' mean), from N×V margins."""
    if calibration is None:
        return calibrated_probs(margins)
    if calibration["kind"] == "temperature":
        return calibrated_probs(margins, calibration["temperature"])
    return _sigmoid(calibration["scale"] * margins + calibration["bias"]).mean(axis=1)


def cross_fitted(margins: np.ndarray, y: np.ndarray, fold: np.ndarray, kind: str) -> np.ndarray:
    """Every fold's probabilities under the calibration fitted on the other folds' predictions, so a
    two-parameter fit cannot win by fitting the very predictions it is scored on."""
    out = np.empty(len(y))
    for k in np.unique(fold):
        held = fold == k
        out[held] = member_probs(margins[held], fit_calibration(margins[~held], y[~held], kind))
    return out


def compare_calibrations(margins: np.ndarray, y: np.ndarray, fold: np.ndarray) -> dict[str, dict[str, float]]:
    """Cross-fitted out-of-fold NLL and ECE of each kind of calibration."""
    y = y.astype(np.float64)
    scores = {}
    for kind in CALIBRATIONS:
        p = cross_fitted(margins, y, fold, kind)
        scores[kind] = {"nll": nll(y, p), "ece": expected_calibration_error(y, p)}
    return scores


def choose_calibration(margins: np.ndarray, y: np.ndarray, fold: np.ndarray,
                       asked: str = "auto") -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The calibration fitted on all of ``margins``, of the kind ``asked`` or, for ``auto``, the kind
    of :data:`CALIBRATIONS` with the lowest cross-fitted NLL over ``fold``; and how it was chosen."""
    if asked not in (*CALIBRATIONS, "auto"):
        raise ValueError(f"unknown calibration {asked!r}; choose from auto, {', '.join(CALIBRATIONS)}")
    scores = compare_calibrations(margins, y, fold) if len(np.unique(fold)) > 1 else {}
    if asked == "auto" and not scores:
        raise ValueError("calibration auto needs predictions from at least two folds to cross-fit")
    kind = min(scores, key=lambda k: scores[k]["nll"]) if asked == "auto" else asked
    return fit_calibration(margins, y, kind), {"asked": asked, "chosen": kind, "rule": CALIBRATION_RULE,
                                               "cross_fitted": scores}
