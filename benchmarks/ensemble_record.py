"""What stays of a K-fold ensemble run (training/ensemble.py) once its machine is gone: one raw JSON per
finished fold in ``benchmarks/results/ensemble/`` (config, the commit that trained it, validation curve,
each term's share, the metrics on its held-out fold: the ablation's record), and, once the model
directory is built, its ``ensemble_report.json`` and ``reliability.png`` beside them.

    python -m training.ensemble --folds 5 --out runs/ensemble run.progress=false &   # hours on a CPU
    python -m benchmarks.ensemble_record runs/ensemble --follow $! --commit           # each fold as it lands
    python -m benchmarks.ensemble_record runs/ensemble                               # record what is done

Run folders are git-ignored, so a session that ends mid-ensemble keeps only what was committed: with
``--follow PID`` the recorder looks every minute until that process exits, and ``--commit`` commits
each new record at once. A fold's record replaces an older one of the same number only when it
comes from another training (its model's ``trained_at``), so rerunning the recorder changes nothing.
``scripts/ship_model.sh`` records the ensemble it ships the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from amf.atomic import write_json_atomic
from benchmarks.driver import REPO, commit_files, raw_result
from training.ensemble import FOLD_DIR, REPORT, fold_done

RESULTS = REPO / "benchmarks/results/ensemble"
PLOT = "reliability.png"
POLL_S = 60


def _fold_labels(fold: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record's labels (fold, of, trained_at) and the code that trained it, from the fold's card."""
    card = json.loads((fold / "model" / "model.json").read_text())["provenance"]
    data = yaml.safe_load((fold / "config.yaml").read_text())["data"]
    labels = {"fold": int(data["fold"]), "of": int(data["folds"]), "trained_at": card.get("trained_at")}
    return labels, {"commit": card.get("git_commit"), "dirty": card.get("git_dirty")}


def _recorded_at(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("trained_at")
    except (OSError, ValueError):
        return None


def record(run: Path, results: Path = RESULTS) -> list[Path]:
    """Bring ``results`` up to ``run``: a record for each finished fold it lacks (or holds from another
    training), and, once the model is built, the report and plot, with no record left of a fold the
    model does not have. The files written or removed."""
    changed = []
    results.mkdir(parents=True, exist_ok=True)
    k = 0
    while (fold := run / FOLD_DIR.format(k)).is_dir():
        if fold_done(fold):
            labels, code = _fold_labels(fold)
            out = results / f"fold-{labels['fold']}.json"
            if labels["trained_at"] is None or _recorded_at(out) != labels["trained_at"]:
                rec = raw_result(fold, labels, code, 0.0)
                rec["seconds"] = round(sum(epoch["seconds"] or 0.0 for epoch in rec["curve"]), 1)
                rec["seconds_meaning"] = "the fold's training epochs; its final scoring is not counted"
                write_json_atomic(out, rec, nan_as_null=True)
                changed.append(out)
        k += 1
    if (run / "model" / "model.json").is_file() and (run / REPORT).is_file():
        members = len(json.loads((run / "model" / "model.json").read_text()).get("members") or [])
        for stale in sorted(results.glob("fold-*.json")):
            number = stale.stem.removeprefix("fold-")
            if number.isdigit() and int(number) >= members:
                stale.unlink()
                changed.append(stale)
        for name in (REPORT, PLOT):
            src, dst = run / name, results / name
            if src.is_file() and (not dst.is_file() or src.read_bytes() != dst.read_bytes()):
                shutil.copyfile(src, dst)
                changed.append(dst)
    return changed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the ensemble's --out folder (holding fold-0/, fold-1/, ...)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the records go")
    parser.add_argument("--commit", action="store_true", help="git-commit each new record as it lands")
    parser.add_argument("--follow", type=int, metavar="PID",
                        help=f"look again every {POLL_S} s until process PID (the training) exits")
    args = parser.parse_args(argv)
    if not args.run.is_dir():
        print(f"error: {args.run} is not a folder (the ensemble's --out)", file=sys.stderr)
        return 2
    while True:
        running = args.follow is not None and _alive(args.follow)
        changed = record(args.run, args.results)
        for path in changed:
            print(f"{'recorded' if path.exists() else 'removed'} {path}", flush=True)
        if changed and args.commit:
            commit_files(changed, f"ensemble: {', '.join(p.stem for p in changed)} of {args.run} (raw records)")
        if not running:
            return 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
