"""Test-time views decided by measurement: the K-fold ensemble's out-of-fold predictions with and
without dihedral TTA.

    python -m benchmarks.tta_oof --run runs/ensemble            # after python -m training.ensemble
    python -m benchmarks.tta_oof --table-only                   # regenerate the table from the raw JSON

For each setting (``none``, ``flip2``, ``dihedral4``, and ``dihedral8`` where the folds saved it)
the calibration and the threshold are fitted on the pooled out-of-fold predictions exactly as
``training.ensemble`` does, then: ROC AUC, balanced accuracy at that threshold, the spread over
the folds, and a paired bootstrap over slides (resampling whole slides, as patches of one slide
are not independent) of each setting minus ``none``. No patch is scored by a member that trained
on it. The BA of every setting sits at a threshold fitted on the same predictions, so it is
optimistic for all of them alike; the AUC needs no threshold.

Writes ``benchmarks/results/tta_oof.json`` (raw) and ``benchmarks/results/tta_oof.md``
(generated from it). Rule: ship dihedral4 only if its BA gain's 95% interval lies above zero
*and* the ensemble's forwards per page with it fit the speed budget, which issue #10 sets at 1.5×
the single model's four dihedral4 views (``FORWARD_BUDGET``); otherwise ship ``none``: K members
already cost K forwards, and the budget's time goes to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from amf.card import read_card
from amf.metrics import binary_metrics, roc_auc
from amf.predict import VIEW_COUNTS
from amf.provenance import git_state, machine
from benchmarks.publish import publish
from training.ensemble import FOLD_DIR, OutOfFold, fit_oof, pool_oof

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
# Forwards per page the shipped predictor may spend: a cold CPU job within 1.5x the single model with
# dihedral4 (4 forwards) is the budget, and the cold job's time grows with its forwards
# (benchmarks/latency.py measures the job itself).
SPEED_BUDGET = 1.5
FORWARD_BUDGET = int(SPEED_BUDGET * VIEW_COUNTS["dihedral4"])  # 6


def fold_runs(run: Path) -> list[Path]:
    runs = []
    while (run / FOLD_DIR.format(len(runs))).is_dir():
        runs.append(run / FOLD_DIR.format(len(runs)))
    if len(runs) < 2:
        raise SystemExit(f"{run} holds {len(runs)} fold folders (fold-0, fold-1, ...); run training.ensemble first")
    return runs


def _ba(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    return binary_metrics(y, p, threshold)["balanced_accuracy"]


def bootstrap(oof: OutOfFold, fits: dict[str, dict[str, Any]], reference: str, resamples: int,
              seed: int = 0) -> dict[str, dict[str, float]]:
    """Slide-grouped paired bootstrap of AUC and BA (at each setting's own OOF threshold) minus ``reference``."""
    rng = np.random.default_rng(seed)
    slides = np.unique(oof.slide)
    rows = [np.flatnonzero(oof.slide == s) for s in slides]
    diffs: dict[str, dict[str, list[float]]] = {k: {"auc": [], "ba": []} for k in fits if k != reference}
    ref = fits[reference]
    for _ in range(resamples):
        idx = np.concatenate([rows[i] for i in rng.integers(0, len(slides), len(slides))])
        y = oof.label[idx]
        if y.all() or not y.any():
            continue
        ref_auc = roc_auc(y, ref["probs_after"][idx])
        ref_ba = _ba(y, ref["probs_after"][idx], ref["threshold"])
        for name in diffs:
            f = fits[name]
            diffs[name]["auc"].append(roc_auc(y, f["probs_after"][idx]) - ref_auc)
            diffs[name]["ba"].append(_ba(y, f["probs_after"][idx], f["threshold"]) - ref_ba)
    out = {}
    for name, d in diffs.items():
        out[name] = {}
        for metric, values in d.items():
            v = np.asarray(values)
            out[name][metric] = {"mean": float(v.mean()), "ci95": [float(np.percentile(v, 2.5)),
                                                                   float(np.percentile(v, 97.5))],
                                 "share_better": float((v > 0).mean()), "resamples": len(v)}
    return out


def measure(run: Path, resamples: int) -> dict[str, Any]:
    runs = fold_runs(run)
    oof = pool_oof(runs)
    settings = [t for t in ("none", "flip2", "dihedral4", "dihedral8") if VIEW_COUNTS[t] <= oof.logits.shape[1]]
    fits = {t: fit_oof(oof, t) for t in settings}
    per_setting = {}
    for t, f in fits.items():
        folds_auc = [r["roc_auc"] for r in f["per_fold"]]
        folds_ba = [r["balanced_accuracy"] for r in f["per_fold"]]
        per_setting[t] = {"views": VIEW_COUNTS[t], "calibration": f["calibration"], "threshold": f["threshold"],
                          "auc": f["overall"]["roc_auc"], "ba": f["overall"]["balanced_accuracy"],
                          "sensitivity": f["overall"]["sensitivity"], "specificity": f["overall"]["specificity"],
                          "ece_after": f["ece_after"], "per_fold_auc": folds_auc, "per_fold_ba": folds_ba,
                          "per_fold_auc_sd": float(np.std(folds_auc, ddof=1)),
                          "per_fold_ba_sd": float(np.std(folds_ba, ddof=1))}
    return {"run": str(run), "folds": len(runs), "patches": len(oof.label), "atypical": int(oof.label.sum()),
            "slides": len(np.unique(oof.slide)), "settings": per_setting,
            "bootstrap_vs_none": bootstrap(oof, fits, "none", resamples), "code": git_state(REPO),
            "machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _d4_forwards(raw: dict[str, Any]) -> int:
    return raw["folds"] * VIEW_COUNTS["dihedral4"]  # every fold's network is a member


def rule_pick(raw: dict[str, Any]) -> str | None:
    """The views the rule ships: dihedral4 when its BA gain's 95% interval lies above zero and the
    members' forwards with it fit ``FORWARD_BUDGET``, else none; None when the folds saved no
    dihedral4 predictions to judge."""
    d4 = raw["bootstrap_vs_none"].get("dihedral4")
    if d4 is None:
        return None
    return "dihedral4" if d4["ba"]["ci95"][0] > 0 and _d4_forwards(raw) <= FORWARD_BUDGET else "none"


def verdict(raw: dict[str, Any]) -> str:
    d4 = raw["bootstrap_vs_none"].get("dihedral4")
    if d4 is None:
        return "no dihedral4 predictions saved: no verdict"
    low, high = d4["ba"]["ci95"]
    gain = f"{d4['ba']['mean']:+.4f} (95% CI {low:+.4f}..{high:+.4f})"
    if rule_pick(raw) == "dihedral4":
        return f"ship dihedral4: its BA gain over none is {gain}"
    if low > 0:
        return (f"ship none: dihedral4's BA gain over none, {gain}, lies above zero, but {raw['folds']} members × "
                f"{VIEW_COUNTS['dihedral4']} views = {_d4_forwards(raw)} forwards a page exceed the speed budget of "
                f"{FORWARD_BUDGET} ({SPEED_BUDGET}× the single model's {VIEW_COUNTS['dihedral4']} views); where the "
                "time is there, refit with `--tta dihedral4`")
    return (f"ship none: dihedral4's BA gain {gain} has a 95% CI that does not lie above zero, "
            "and it costs 4× the forwards")


def _ci(b: dict[str, Any] | None, metric: str) -> str:
    if b is None:
        return "–"
    return f"{b[metric]['mean']:+.4f} ({b[metric]['ci95'][0]:+.4f}..{b[metric]['ci95'][1]:+.4f})"


def table(raw: dict[str, Any]) -> str:
    lines = ["| views | forwards per page and member | OOF AUC | OOF BA | per-fold AUC sd | per-fold BA sd | "
             "ΔAUC vs none (95% CI) | ΔBA vs none (95% CI) |", "|---|---|---|---|---|---|---|---|"]
    for name, s in raw["settings"].items():
        b = raw["bootstrap_vs_none"].get(name)
        lines.append(f"| {name} | {s['views']} | {s['auc']:.4f} | {s['ba']:.4f} | {s['per_fold_auc_sd']:.4f} | "
                     f"{s['per_fold_ba_sd']:.4f} | {_ci(b, 'auc')} | {_ci(b, 'ba')} |")
    return "\n".join([
        "# TTA decided on out-of-fold predictions", "",
        "Generated by `python -m benchmarks.tta_oof --table-only` from `benchmarks/results/tta_oof.json`; "
        "do not edit by hand.", "",
        f"{raw['folds']} folds of `{raw['run']}`: {raw['patches']} patches ({raw['atypical']} atypical) on "
        f"{raw['slides']} slides, each scored by the one member that did not train on it. Calibration and threshold "
        "fitted per setting on the pooled out-of-fold predictions (as `training.ensemble` does); BA at that "
        "threshold (optimistic alike for every setting). Δ: paired bootstrap over slides.", "",
        *lines, "", f"Verdict: {verdict(raw)}.", "",
        f"Code: {raw['code']['commit']}{' (dirty)' if raw['code']['dirty'] else ''}. Date: {raw['date']}.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=REPO / "runs/ensemble", help="the training.ensemble --out folder")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples over slides")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where tta_oof.json and tta_oof.md go")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--model", type=Path,
                        help="the run's model directory: exit 1 when its views are not the ones the rule picks "
                             "(scripts/ship_model.sh, before it ships an ensemble)")
    args = parser.parse_args(argv)
    raw_path = args.results / "tta_oof.json"
    if args.table_only:
        return publish(json.loads(raw_path.read_text()), table, args.results / "tta_oof.md")
    raw = measure(args.run, args.bootstrap)
    publish(raw, table, args.results / "tta_oof.md", raw_path)
    views, pick = read_card(args.model).get("tta", "none") if args.model else None, rule_pick(raw)
    if views is not None and pick is not None and views != pick:
        print(f"error: {args.model} ships TTA {views}, but the rule on its out-of-fold predictions picks {pick}; "
              f"rerun its training.ensemble command with --tta {pick} (the folds are kept, nothing retrains)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
