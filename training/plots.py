"""PNG plots of a run: training curves, ROC curves, balanced accuracy per domain."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from amf.metrics import roc_auc, roc_curve


def _rolling(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def training_curves(metrics_jsonl: Path, out: Path) -> Path:
    """Loss terms per step, each term's gradient share at the backbone's last stage, and validation per epoch."""
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    steps = [r for r in rows if r.get("kind") == "step"]
    fig, (ax_loss, ax_grad, ax_val) = plt.subplots(1, 3, figsize=(15, 4))
    window = max(1, len(steps) // 50)
    for key in ("supervised", "align", "distil", "loss"):
        pts = [(r["step"], r[key]) for r in steps if r.get(key) is not None]
        if pts:
            x, y = zip(*pts, strict=True)
            smooth = _rolling(list(y), window)
            ax_loss.plot(x[len(x) - len(smooth):], smooth, label=key)
    ax_loss.set(xlabel="step", ylabel=f"loss (unweighted; mean of {window} steps)", title="loss terms")
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    for key in ("align", "distil"):
        pts = [(r["step"], r[f"grad_share/{key}"]) for r in steps if r.get(f"grad_share/{key}") is not None]
        if pts:
            ax_grad.plot(*zip(*pts, strict=True), marker=".", label=key)
    ax_grad.axhline(1.0, ls=":", color="grey")
    ax_grad.set(xlabel="step", ylabel="|grad of weighted term| / |grad of supervised|",
                title="gradient share at the backbone's last stage")
    if ax_grad.lines:
        ax_grad.set_yscale("log")
        ax_grad.legend(fontsize=8)
    for key, style in (("val/student/balanced_accuracy", "-"), ("val/student/roc_auc", "--"),
                       ("val/teacher/balanced_accuracy", "-"), ("val/teacher/roc_auc", "--")):
        pts = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None and not math.isnan(r[key])]
        if pts:
            ax_val.plot(*zip(*pts, strict=True), style, marker="o", label=key[4:])
    ax_val.set(xlabel="epoch", ylabel="validation (threshold 0.5 for BA)", ylim=(0.4, 1.0), title="validation")
    if ax_val.lines:
        ax_val.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], out: Path, title: str) -> Path:
    """curves: name -> (y_true, score, threshold)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, s, thr) in curves.items():
        if len(set(np.asarray(y).tolist())) < 2:
            continue
        fpr, tpr, thresholds = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, s):.3f})")
        at = np.flatnonzero(thresholds <= thr)
        if len(at):
            ax.plot(fpr[at[0]], tpr[at[0]], "o", color=ax.lines[-1].get_color())
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def domain_bars(per_domain: dict[str, dict[str, dict[str, Any]]], out: Path, title: str) -> Path:
    """per_domain: split name -> domain -> metrics."""
    rows = [(f"{split}: {dom}", m["balanced_accuracy"], m.get("roc_auc", math.nan), m["n"])
            for split, doms in per_domain.items() for dom, m in doms.items()]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ys = np.arange(len(rows))
    ax.barh(ys - 0.2, [r[1] for r in rows], 0.4, label="balanced accuracy")
    ax.barh(ys + 0.2, [0 if math.isnan(r[2]) else r[2] for r in rows], 0.4, label="ROC AUC")
    ax.set_yticks(ys, [f"{r[0]} (n={r[3]})" for r in rows], fontsize=8)
    ax.axvline(0.8, ls=":", color="grey")
    ax.set(xlim=(0, 1), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, title: str, bins: int = 15) -> Path:
    """Reliability diagram: atypical share against mean P(atypical) per bin, one line per (labels, probs)."""
    from amf.metrics import expected_calibration_error, reliability_bins

    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    for name, (y, p) in curves.items():
        r = reliability_bins(y, p, bins)
        filled = r["count"] > 0
        ax.plot(r["mean_prob"][filled], r["atypical_share"][filled], marker="o",
                label=f"{name} (ECE {expected_calibration_error(y, p, bins):.3f})")
        ax_hist.hist(p, bins=r["edges"], histtype="step", label=name)
    ax.set(ylabel="atypical share", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    ax_hist.set(xlabel="P(atypical)", ylabel="patches", yscale="log")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
