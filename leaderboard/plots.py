"""The PNGs ``evaluate`` writes: ROC curves, per-domain bars, the confusion matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from amf import CLASS_NAMES
from amf.atomic import write_atomic
from amf.metrics import roc_curve
from leaderboard.scored import Scored


def _figure(size: tuple[float, float] = (6.0, 5.0)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=size)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def plot_roc(path: Path, scored: Scored, result: dict[str, Any], names: dict[str, str]) -> Path:
    plt, fig, ax = _figure()
    keys = [str(d) for d in scored.tumour_domains]
    curves = [("overall", np.ones(len(keys), bool), result["overall"]["roc_auc"], 2.5)]
    curves += [(f"{k}: {names.get(k, k)}", np.array(keys) == k, m["roc_auc"], 1.2)
               for k, m in result["per_domain"].items()]
    for label, mask, auc, width in curves:
        if math.isnan(auc):
            continue  # one class: no curve
        fpr, tpr, _ = roc_curve(scored.y_true[mask], scored.y_score[mask])
        ax.plot(fpr, tpr, lw=width, label=f"{label[:30]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, atypical = positive", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


def plot_domains(path: Path, result: dict[str, Any], names: dict[str, str]) -> Path:
    groups = [("overall", result["overall"])] + [(f"{k}: {names.get(k, k)}"[:30], m)
                                                 for k, m in result["per_domain"].items()]
    plt, fig, ax = _figure((max(6.0, 1.6 * len(groups) + 2), 4.5))
    metrics = ("balanced_accuracy", "sensitivity", "specificity", "roc_auc")
    width = 0.8 / len(metrics)
    x = np.arange(len(groups))
    for i, name in enumerate(metrics):
        values = [m[name] for _, m in groups]
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, np.nan_to_num(values, nan=0.0), width, label=name)
    ax.set_xticks(x, [g for g, _ in groups], rotation=15, ha="right", fontsize=8)
    ax.set(ylim=(0, 1), ylabel="score", title="Per-domain metrics (n/a drawn as 0)")
    ax.legend(fontsize=8, ncols=2)
    return _save(plt, fig, path)


def plot_confusion(path: Path, overall: dict[str, Any]) -> Path:
    plt, fig, ax = _figure((4.5, 4.0))
    counts = np.array([[overall["tn"], overall["fp"]], [overall["fn"], overall["tp"]]])
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), c in np.ndenumerate(counts):
        ax.text(j, i, f"{c}\n{share[i, j]:.1%}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "k")
    ax.set_xticks([0, 1], [f"pred {n}" for n in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {n}" for n in CLASS_NAMES])
    ax.set_title("Confusion matrix (row-normalised)")
    return _save(plt, fig, path)


def write_plots(out: Path, scored: Scored, result: dict[str, Any], names: dict[str, str]) -> list[Path]:
    return [plot_roc(out / "roc.png", scored, result, names), plot_domains(out / "domains.png", result, names),
            plot_confusion(out / "confusion.png", result["overall"])]
