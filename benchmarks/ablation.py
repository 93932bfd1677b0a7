"""Leave-one-domain-out ablation of Mix, Align and Distil on AMi-Br, the same budget for each arm.

    python -m benchmarks.ablation --epochs 3            # runs what is missing, then writes the table
    python -m benchmarks.ablation --table-only          # rewrite the table from finished runs

Runs land in runs/ablation/<arm>-<domain>-s<seed>/ and are skipped when already finished, so the
command resumes after an interruption.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from amf.atomic import write_atomic
from benchmarks.machine import describe
from training.config import ABLATION_ARMS as ARMS

# TUPAC16 has no scanner in the metadata, so it is held out by its origin.
DOMAINS = {"Hamamatsu XR": ("Scanner", "Hamamatsu XR"), "Hamamatsu S360": ("Scanner", "Hamamatsu S360"),
           "TUPAC16": ("Origin", "TUPAC16")}


def _slug(text: str) -> str:
    return text.lower().replace("+", "-").replace(" ", "-")


def plan(seeds_all: int) -> list[tuple[str, str, int]]:
    """Priority order, so an interrupted budget still yields the most informative table."""
    order = [(arm, dom, 0) for arm in ("ERM", "Full") for dom in DOMAINS]
    order += [(arm, dom, 0) for arm in ("ERM+Mix", "ERM+Align", "ERM+Distil") for dom in DOMAINS]
    order += [(arm, dom, 1) for arm in ("ERM", "Full") for dom in DOMAINS]
    order += [(arm, dom, s) for s in range(1, seeds_all) for arm in ("ERM+Mix", "ERM+Align", "ERM+Distil")
              for dom in DOMAINS]
    return order


def run_dir(root: Path, arm: str, dom: str, seed: int) -> Path:
    return root / f"{_slug(arm)}-{_slug(dom)}-s{seed}"


def _claim(out: Path) -> bool:
    """Take a run for this process, so several workers can share one plan; stale claims are retaken."""
    out.mkdir(parents=True, exist_ok=True)
    claim = out / ".claimed"
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(claim.read_text() or 0), 0)
            return False  # a live worker has it
        except (ProcessLookupError, ValueError):
            claim.write_text(str(os.getpid()))
            return True
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    return True


def run_one(root: Path, arm: str, dom: str, seed: int, epochs: int, extra: list[str], out: Path | None = None) -> None:
    column, value = DOMAINS[dom]
    out = out or run_dir(root, arm, dom, seed)
    cmd = [sys.executable, "-m", "training.train", "--config", "training/configs/default.yaml",
           f"run.out={out}", f"run.seed={seed}", f"optim.epochs={epochs}", "run.tta=none", "run.progress=false",
           "data.split=lodo", f"data.lodo_column={column}", f"data.lodo_value={value}", *ARMS[arm], *extra]
    t0 = time.time()
    with open(root / "ablation.log", "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"{arm:11s} {dom:15s} seed {seed}: exit {code} in {time.time() - t0:.0f} s", flush=True)


def _fmt(values: list[float]) -> str:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"


def table(root: Path, epochs: int, note: str) -> str:
    rows = []
    for arm in ARMS:
        cells, ba_all, auc_all, seeds_seen = [], [], [], set()
        teacher = []
        for dom in DOMAINS:
            ba, auc = [], []
            for seed in range(10):
                summary = run_dir(root, arm, dom, seed) / "summary.json"
                if summary.is_file():
                    res = json.loads(summary.read_text())["results"]
                    o = res["student"]["test"]["overall"]
                    ba.append(o["balanced_accuracy"])
                    auc.append(o["roc_auc"])
                    seeds_seen.add(seed)
                    if "teacher" in res:
                        teacher.append(res["teacher"]["test"]["overall"]["roc_auc"])
            cells.append(f"{_fmt(ba)} / {_fmt(auc)}")
            ba_all.append(float(np.mean(ba)) if ba else math.nan)
            auc_all.append(float(np.mean(auc)) if auc else math.nan)
        mean_ba = np.nanmean(ba_all) if not all(math.isnan(x) for x in ba_all) else math.nan
        mean_auc = np.nanmean(auc_all) if not all(math.isnan(x) for x in auc_all) else math.nan
        t_auc = f"{np.mean(teacher):.3f}" if teacher else "–"
        mean = "–" if math.isnan(mean_ba) else f"{mean_ba:.3f} / {mean_auc:.3f}"
        complete = "" if all(not math.isnan(x) for x in ba_all) else " (partial)"
        rows.append(f"| {arm} | {len(seeds_seen)} | " + " | ".join(cells) + f" | {mean}{complete} | {t_auc} |")
    head = ("| arm | seeds | " + " | ".join(f"{d}: BA / AUC" for d in DOMAINS)
            + " | mean over domains: BA / AUC | teacher AUC (mean) |")
    sep = "|" + "---|" * (len(DOMAINS) + 4)
    return "\n".join([
        "# Leave-one-domain-out ablation on AMi-Br",
        "",
        f"Machine: {describe()}.",
        "",
        f"Budget per arm and run: {epochs} epochs of EfficientNet-Lite0 (ImageNet, from the PyPI wheel), batch 64, "
        "balanced sampling, the same augmentation for every arm; no TTA. The student is scored on the held-out "
        "domain at the threshold that maximised balanced accuracy on a slide-grouped 15 % validation split of the "
        "training domains. Cells: balanced accuracy / ROC AUC of the student, mean ± sd over seeds (a single "
        "number where one seed ran).",
        "",
        head, sep, *rows, "",
        note,
    ])


def _write_table(args: argparse.Namespace) -> None:
    text = table(args.root, args.epochs, args.note) + "\n"
    write_atomic(args.out, lambda tmp: tmp.write_text(text))  # workers rewrite it side by side


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--seeds-all", type=int, default=1, help="seeds for the Mix/Align/Distil arms (GPU: 2)")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="training processes side by side (threads split)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ablation.md"))
    parser.add_argument("--note", default="")
    parser.add_argument("extra", nargs="*", help="extra training overrides, e.g. run.threads=1")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    if not args.table_only and args.workers > 1:
        # one plan, several workers: each claims the next free run; threads are split between them
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        cmd = [sys.executable, "-m", "benchmarks.ablation", "--epochs", str(args.epochs), "--root", str(args.root),
               "--seeds-all", str(args.seeds_all), "--out", str(args.out), "--note", args.note, *args.extra,
               f"run.threads={threads}"]
        for proc in [subprocess.Popen(cmd) for _ in range(args.workers)]:
            proc.wait()
    elif not args.table_only:
        for arm, dom, seed in plan(args.seeds_all):
            out = run_dir(args.root, arm, dom, seed)
            if not (out / "summary.json").is_file() and _claim(out):
                run_one(args.root, arm, dom, seed, args.epochs, args.extra)
            _write_table(args)
    _write_table(args)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
