"""The organizer's metrics for atypical (positive) vs normal: one implementation for training
validation, local leaderboard evaluation and benchmarks.

Balanced accuracy is primary; sensitivity, specificity, accuracy and ROC AUC are reported too,
overall and per tumour domain. The edge cases follow the MIDOG 2025 Track 2 evaluation container
(DeepMicroscopy/MIDOG25_T2_evaluation_docker, evaluate.py):

* Overall, sensitivity and specificity are plain ratios of the pooled counts. Without atypical
  (or without normal) cases the organizer's division by zero aborts the evaluation; here the value
  is NaN and the reason is listed under ``organizer_errors``.
* Per domain they come from scikit-learn's ``recall_score`` with its default ``zero_division``,
  so a domain without atypical cases scores sensitivity 0.0 (not NaN), which also halves its
  balanced accuracy. Balanced accuracy is always ``(sensitivity + specificity) / 2``.
* ROC AUC with a single class is NaN (scikit-learn >= 1.6 warns and returns NaN).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES = ("balanced_accuracy", "sensitivity", "specificity", "accuracy", "roc_auc")

ArrayLike = Sequence[float] | np.ndarray


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN with one class."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (``score >= t``), from (0, 0) to (1, 1).

    The same points as scikit-learn's ``roc_curve(..., drop_intermediate=False)``. A rate whose
    class is absent stays 0 instead of dividing by zero, so a one-class curve can still be drawn.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # the last index of each run of equal scores: the cut just below that score
    last = np.flatnonzero(np.r_[np.diff(s_sorted) != 0, True]) if len(s) else np.zeros(0, int)
    tps = np.cumsum(y_sorted)[last]
    fps = np.cumsum(~y_sorted)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def _ratio(num: int, den: int, zero_division: float) -> float:
    return num / den if den else float(zero_division)


def binary_metrics(y_true: ArrayLike, y_score: ArrayLike, threshold: float = 0.5,
                   y_pred: ArrayLike | None = None, *, zero_division: float = 0.0) -> dict[str, float]:
    """The organizer's metrics for one set of cases. ``y_pred`` overrides thresholding ``y_score``.

    ``zero_division`` is the sensitivity (specificity) when there are no atypical (normal) cases:
    0.0 as in the organizer's per-domain scores, NaN for its overall scores (where it aborts).
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype=np.float64)
    pred = (s >= threshold).astype(int) if y_pred is None else np.asarray(y_pred).astype(int)
    if len(pred) != len(y) or len(s) != len(y):
        raise ValueError(f"{len(y)} labels but {len(s)} scores and {len(pred)} predictions")
    tp = int(np.sum((pred == 1) & (y == 1)))
    tn = int(np.sum((pred == 0) & (y == 0)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    sens = _ratio(tp, tp + fn, zero_division)
    spec = _ratio(tn, tn + fp, zero_division)
    return {
        "balanced_accuracy": (sens + spec) / 2.0,
        "sensitivity": sens,
        "specificity": spec,
        "accuracy": _ratio(tp + tn, len(y), math.nan),
        "roc_auc": roc_auc(y, s),
        "n": len(y),
        "n_atypical": int(y.sum()),
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    }


def organizer_errors(metrics: dict[str, Any]) -> list[str]:
    """Why the organizer's evaluation would abort on these overall counts; empty when it would not."""
    errors = []
    if metrics["n"] == 0:
        errors.append("no cases at all: the organizer's evaluation has nothing to aggregate and fails")
    else:
        if metrics["tp"] + metrics["fn"] == 0:
            errors.append("no atypical cases: the organizer's overall sensitivity divides by zero and fails")
        if metrics["tn"] + metrics["fp"] == 0:
            errors.append("no normal cases: the organizer's overall specificity divides by zero and fails")
    return errors


def _domain_name(value: Any) -> str:
    """One spelling per domain, as a groupby on the value gives: 1, 1.0 and np.int64(1) are all "1"."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        f = float(value)
        if f.is_integer():
            return str(int(f))
        return str(f)
    return str(value)


def _domain_order(names: Sequence[str]) -> list[str]:
    """Distinct domains in the organizer's order: numerically when they are numbers."""
    distinct = list(dict.fromkeys(names))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def domain_metrics(y_true: ArrayLike, y_score: ArrayLike, domains: Sequence[Any] | None = None,
                   threshold: float = 0.5, y_pred: ArrayLike | None = None) -> dict[str, Any]:
    """``{"threshold", "overall", "per_domain": {str(domain): {...}}, "organizer_errors"}``.

    Overall undefined rates are NaN (the organizer aborts; see ``organizer_errors``); per-domain
    ones are 0.0 as the organizer's scikit-learn calls give. Domains are in numeric order when
    they are numbers, else in string order.
    """
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    p = None if y_pred is None else np.asarray(y_pred)
    overall = binary_metrics(y, s, threshold, p, zero_division=math.nan)
    result: dict[str, Any] = {"threshold": float(threshold), "overall": overall,
                              "organizer_errors": organizer_errors(overall)}
    if domains is not None:
        d = list(domains)
        if len(d) != len(y):
            raise ValueError(f"{len(y)} labels but {len(d)} domains")
        names = np.asarray([_domain_name(v) for v in d])
        result["per_domain"] = {}
        for name in _domain_order(list(names)):
            mask = names == name
            result["per_domain"][name] = binary_metrics(
                y[mask], s[mask], threshold, None if p is None else p[mask], zero_division=0.0)
    return result


def weak_label_metrics(y_true: ArrayLike, y_score: ArrayLike, labels: dict[str, np.ndarray],
                       threshold: float) -> dict[str, dict[str, Any]]:
    """Per weak label (Scanner, Origin, ...), the metrics of each of its values; an empty value is "unknown"."""
    return {name: domain_metrics(y_true, y_score, np.where(values == "", "unknown", values), threshold)["per_domain"]
            for name, values in labels.items()}


def best_threshold(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """The threshold on P(atypical) that maximises balanced accuracy.

    Each candidate cut lies half-way between two neighbouring validation scores, so it is not
    glued to one case; among equally good cuts the one nearest 0.5 wins (a median of tied cuts
    could fall between them, where balanced accuracy is worse). Used on validation data only.
    With one class present it falls back to 0.5.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    if y.all() or not y.any():
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, s)
    bacc = ((tpr + 1.0 - fpr) / 2.0)[1:]  # drop the "nothing is atypical" point at +inf
    scores = thresholds[1:]  # unique scores, descending
    cuts = np.concatenate(((scores[:-1] + scores[1:]) / 2.0, scores[-1:]))
    # ties to float rounding only: numpy's default rtol (1e-5) would merge cuts that really differ
    best = np.flatnonzero(np.isclose(bacc, bacc.max(), rtol=0.0, atol=1e-12))
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def reliability_bins(y_true: ArrayLike, prob: ArrayLike, bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins of P(atypical): per bin the cases, the mean probability and the atypical share."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=bins) / count
        share = np.bincount(which, weights=y, minlength=bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count, "mean_prob": mean_p, "atypical_share": share}


def expected_calibration_error(y_true: ArrayLike, prob: ArrayLike, bins: int = 15) -> float:
    """ECE of P(atypical): the case-weighted mean gap between each bin's mean probability and its
    atypical share (equal-width bins); NaN without cases."""
    r = reliability_bins(y_true, prob, bins)
    filled = r["count"] > 0
    if not filled.any():
        return math.nan
    gaps = np.abs(r["mean_prob"][filled] - r["atypical_share"][filled])
    return float(np.sum(gaps * r["count"][filled]) / r["count"].sum())


def scores_at(y_true: ArrayLike, prob: ArrayLike, threshold: float) -> dict[str, float]:
    """Scores of probabilities ``prob`` at a threshold fitted elsewhere, with the threshold that would
    have been best on these very labels as a ceiling: to read a loss against, never to choose by."""
    y, p = np.asarray(y_true), np.asarray(prob, np.float64)
    m = binary_metrics(y, p, threshold)
    ceiling = best_threshold(y, p)
    return {"balanced_accuracy": m["balanced_accuracy"], "roc_auc": m["roc_auc"],
            "sensitivity": m["sensitivity"], "specificity": m["specificity"],
            "predicted_atypical": float(np.mean(p >= threshold)),
            "ece": expected_calibration_error(y, p),
            "best_threshold": ceiling,
            "balanced_accuracy_at_best": binary_metrics(y, p, ceiling)["balanced_accuracy"]}
