"""Mean ± sd over seeds, and the one rule every generated table uses to call a difference: beyond
the seed spread, or none (benchmarks/ablation.py against ERM, choices and studies against their
question's default).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def mean_sd(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample sd (nan for one value) and count of the values that are numbers."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return math.nan, math.nan, 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v)


def fmt(values: list[float]) -> str:
    """mean ± sd over seeds; a single run is marked (1 seed)."""
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "–"
    return f"{mean:.3f} ± {sd:.3f}" if n > 1 else f"{mean:.3f}¹"


def gap(values: list[float], reference: list[float]) -> tuple[float, float]:
    """The mean of ``values`` minus the reference's, and the seed spread a difference must exceed to count:
    the larger of the two seed standard deviations (the one rule of every table's calls and of the goals)."""
    (m_a, sd_a, _), (m_e, sd_e, _) = mean_sd(values), mean_sd(reference)
    return m_a - m_e, max(sd_a, sd_e)


def against(values: list[float], reference: list[float], name: str = "ERM") -> str:
    """The mean of ``values`` minus the ``reference``'s, called a difference only beyond the seed spread:
    when it exceeds the larger of the two seed standard deviations. One seed whose value lies within
    the reference's spread is no difference (¹); beyond it, one seed cannot say whether its own spread
    covers the gap, so no call. The reference needs two seeds for any call."""
    (m_a, _, n_a), (m_e, sd_e, n_e) = mean_sd(values), mean_sd(reference)
    if n_a == 0:
        return "–"
    if n_e < 2:
        return "needs 2 seeds"
    if n_a < 2:
        diff = m_a - m_e
        within = abs(diff) <= sd_e
        return f"{diff:+.3f} " + ("no difference¹" if within else f"one seed, beyond {name}'s spread: no call")
    diff, spread = gap(values, reference)
    call = "higher" if diff > spread else "lower" if diff < -spread else "no difference"
    return f"{diff:+.3f} {call}"


VAL_AUC_RULE = ("Against the reference, each question's first row (val AUC): a difference within the larger of the "
                "two seed spreads is no difference; one seed within the reference's spread is no difference¹, beyond "
                "it no call; the reference needs two seeds for any call.")


def val_auc_against_default(records: list[dict[str, Any]], default: list[dict[str, Any]]) -> str:
    """The choices' and studies' cell: a variant's validation AUC against its default's ('' on the default's
    own row and on a variant that has not run)."""
    if records is default or not records:
        return ""
    return against([r["student"]["val"]["roc_auc"] for r in records],
                   [r["student"]["val"]["roc_auc"] for r in default], "the reference")
