"""The organizer's metrics for atypical (positive) vs normal: one implementation for training
validation, local leaderboard evaluation and benchmarks.

Balanced accuracy is primary; sensitivity, specificity, accuracy and ROC AUC are reported too,
overall and per tumour domain. A metric that is undefined on the data at hand (sensitivity
without positives, AUC with one class) is NaN, never a made-up 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES = ("balanced_accuracy", "sensitivity", "specificity", "accuracy", "roc_auc")


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic, ties counted half."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(s)]))
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds, from (0, 0) to (1, 1)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    thresholds = np.concatenate(([np.inf], np.unique(s)[::-1]))
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.array([np.sum(y & (s >= t)) / n_pos for t in thresholds])
    fpr = np.array([np.sum(~y & (s >= t)) / n_neg for t in thresholds])
    return fpr, tpr, thresholds


def binary_metrics(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray,
                   threshold: float = 0.5, y_pred: Sequence[int] | np.ndarray | None = None) -> dict[str, float]:
    """The organizer's metrics for one set of cases. ``y_pred`` overrides thresholding ``y_score``."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype=np.float64)
    pred = (s >= threshold).astype(int) if y_pred is None else np.asarray(y_pred).astype(int)
    tp = int(np.sum((pred == 1) & (y == 1)))
    tn = int(np.sum((pred == 0) & (y == 0)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    defined = [v for v in (sens, spec) if not math.isnan(v)]
    return {
        "balanced_accuracy": float(np.mean(defined)) if defined else math.nan,
        "sensitivity": sens,
        "specificity": spec,
        "accuracy": (tp + tn) / len(y) if len(y) else math.nan,
        "roc_auc": roc_auc(y, s),
        "n": int(len(y)),
        "n_atypical": int(y.sum()),
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    }


def domain_metrics(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray,
                   domains: Sequence[Any] | None = None, threshold: float = 0.5,
                   y_pred: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
    """``{"overall": {...}, "per_domain": {domain: {...}}}``, domains in sorted order."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    p = None if y_pred is None else np.asarray(y_pred)
    result: dict[str, Any] = {"threshold": float(threshold), "overall": binary_metrics(y, s, threshold, p)}
    if domains is not None:
        d = np.asarray([str(v) for v in domains])
        result["per_domain"] = {
            name: binary_metrics(y[d == name], s[d == name], threshold, None if p is None else p[d == name])
            for name in sorted(set(d.tolist()))
        }
    return result


def best_threshold(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """The threshold on P(atypical) that maximises balanced accuracy; the midpoint of ties.

    Used on validation data only. With one class present it falls back to 0.5.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    if y.all() or not y.any():
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, s)
    bacc = (tpr + 1.0 - fpr) / 2.0
    best = np.flatnonzero(np.isclose(bacc, bacc.max()))
    candidates = thresholds[best]
    candidates = candidates[np.isfinite(candidates)]
    if len(candidates) == 0:
        return 0.5
    # Place the cut half-way to the next lower score, so it is not glued to one validation case.
    t = float(np.median(candidates))
    lower = s[s < t]
    return float((t + lower.max()) / 2.0) if len(lower) else t
