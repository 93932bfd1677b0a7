"""What every validation driver shares (benchmarks/ablation.py, choices.py, studies.py): one planned
training run at a time, resumable and skipped once its raw result exists, refused when that result
was made with other settings, never started past ``AMF_START_RUNS_UNTIL``; the raw JSON a finished
run leaves, and a commit of just that file as it lands.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from amf.provenance import machine
from benchmarks.derived import refresh_in
from training.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 15  # ERM's validation curve on AMi-Br flattens before this (see ablation_curves.png)
UNTIL_ENV = "AMF_START_RUNS_UNTIL"
_DRIVER_STARTED = time.time()


def start_deadline(text: str | None = None, now: float | None = None) -> float | None:
    """When the drivers stop starting trainings (epoch seconds), from ``AMF_START_RUNS_UNTIL``: an ISO
    date-time (UTC unless it names an offset) or ``HH:MM`` UTC, the next such time after the driver
    started. A queue then stops where a run could not finish, for example before a machine is taken
    back; nothing is lost, as the next call starts with the runs left."""
    text = os.environ.get(UNTIL_ENV, "") if text is None else text
    if not text:
        return None
    now = _DRIVER_STARTED if now is None else now
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}", text):
            hours, minutes = map(int, text.split(":"))
            start = dt.datetime.fromtimestamp(now, dt.timezone.utc)
            at = start.replace(hour=hours, minute=minutes, second=0, microsecond=0)
            return (at if at > start else at + dt.timedelta(days=1)).timestamp()
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: {UNTIL_ENV}={text!r} is neither HH:MM (UTC) nor an ISO date-time") from None
    return (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)).timestamp()


def run_training(out: Path, cmd: list[str]) -> tuple[int, float]:
    """Train into ``out`` (a second try resumes from the checkpoint); exit code and seconds. Past
    :func:`start_deadline`, nothing starts: the driver exits (code 3) with a one-line reason."""
    deadline = start_deadline()
    if deadline is not None and time.time() >= deadline:
        print(f"stopped: it is past {UNTIL_ENV}={os.environ[UNTIL_ENV]}; {out.name} and what follows it start on "
              "the next call", file=sys.stderr, flush=True)
        raise SystemExit(3)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rc = 1
    for _attempt in range(2):
        with open(out / "driver.log", "a") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
        if rc == 0:
            break
    return rc, time.time() - t0


def result_state(result: Path, cmd: list[str]) -> str:
    """``done`` when ``result`` holds the run of this training command (the same config digest),
    ``to run`` when it is absent, ``other recipe`` when it was made with other settings, which no
    driver may count as this run: one table never mixes recipes."""
    if not result.is_file():
        return "to run"
    planned = planned_config(cmd).digest()
    return "done" if json.loads(result.read_text()).get("config_digest") == planned else "other recipe"


def planned_config(cmd: list[str]) -> Config:
    """The config a driver's ``training.train`` command line would train with."""
    i = cmd.index("--config")
    return load_config(REPO / cmd[i + 1], cmd[i + 2:])


def skip_or_refuse(result: Path, cmd: list[str]) -> bool:
    """True when ``result`` is this run, done; stops the driver with one line when it is another recipe's."""
    state = result_state(result, cmd)
    if state == "other recipe":
        raise SystemExit(f"error: {result} was made with other settings than this run's; give --results a folder "
                         "of its own for these settings (one table never mixes recipes)")
    return state == "done"


def train_planned(result: Path, out: Path, cmd: list[str], label: str, dry_run: bool) -> float | None:
    """One run of a driver's plan: printed with its state under ``dry_run``, skipped when its result is
    done (refused when another recipe's), else trained into ``out``; its seconds when it finished."""
    if dry_run:
        print(f"{result_state(result, cmd)}: {label}\n  {' '.join(cmd)}")
        return None
    if skip_or_refuse(result, cmd):
        return None
    rc, seconds = run_training(out, cmd)
    print(f"{label}: exit {rc} in {seconds:.0f} s", flush=True)
    return seconds if rc == 0 else None


def by_question(groups: list[list[Any]], seeds: int) -> list[tuple[Any, int]]:
    """A run order for questions whose first variant is the default the others are compared with:
    question by question, the default first, each variant at every seed before the next begins. One
    seed is called only within the default's spread, which two seeds of a stable default make narrow
    (0.004 AUC for ERM on the holdout split), so a variant is answered only once its own seeds have
    run; a budget cut short thus leaves whole answers to the first questions, not one seed of all."""
    order: list[tuple[Any, int]] = []
    for group in groups:
        for item in ((v, s) for v in group for s in range(seeds)):
            if item not in order:  # a variant shared between questions trains once, where it first appears
                order.append(item)
    return order


def _overall(result: dict[str, Any], part: str) -> dict[str, float] | None:
    if part not in result:
        return None
    o = result[part]["overall"]
    return {k: o[k] for k in ("balanced_accuracy", "roc_auc", "sensitivity", "specificity", "n")}


def _term_shares(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per term: mean unweighted loss, and mean gradient share at the last stage (vs the supervised term)."""
    out: dict[str, dict[str, float]] = {}
    for term in ("supervised", "align", "distil"):
        loss = [r[term] for r in rows if r.get(term) is not None]
        probed = [r for r in rows if r.get(f"grad_share/{term}") is not None]
        share = [r[f"grad_share/{term}"] for r in probed]
        # a short epoch (a run on one small domain) may hold no probe step: nan, not numpy's empty-mean warning
        last = [r[f"grad_share/{term}"] for r in probed if r["epoch"] == rows[-1]["epoch"]]
        if loss:
            out[term] = {"loss_mean": float(np.mean(loss)),
                         "grad_share_mean": float(np.mean(share)) if share else math.nan,
                         "grad_share_last_epoch": float(np.mean(last)) if last else math.nan}
    return out


def raw_result(run: Path, labels: dict[str, Any], code: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The committed record of one finished run, built from its run folder; ``labels`` name the run
    (arm, held-out domain, seed; or a study's variant)."""
    summary = json.loads((run / "summary.json").read_text())["results"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    card = json.loads((run / "model" / "model.json").read_text())
    import yaml

    return {
        **labels,
        "config": yaml.safe_load((run / "config.yaml").read_text()),
        "config_digest": card["provenance"]["config_digest"],
        "code": code,
        "align_labels": (card["provenance"]["recipe"]["align"] or {}).get("labels"),
        "pretrained": card["provenance"].get("pretrained"),  # the source training resolved ("auto" does not say)
        "split": card["provenance"]["data"]["split"],
        "selection": "last epoch; threshold maximising balanced accuracy on the in-domain validation split",
        "curve": [{k: r.get(k) for k in ("epoch", "seconds", "train/supervised", "train/align", "train/distil",
                                          "val/student/balanced_accuracy", "val/student/roc_auc",
                                          "val/teacher/balanced_accuracy", "val/teacher/roc_auc")}
                  for r in epochs],
        "terms": _term_shares([r for r in rows if r["kind"] == "step"]),
        "student": {"threshold": summary["student"]["threshold"], "val": _overall(summary["student"], "val"),
                    "test": _overall(summary["student"], "test")},
        "teacher": ({"threshold": summary["teacher"]["threshold"], "val": _overall(summary["teacher"], "val"),
                     "test": _overall(summary["teacher"], "test")} if "teacher" in summary else None),
        "seconds": round(seconds, 1),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def commit_files(paths: list[Path], message: str) -> None:
    """Commit just these files in the checkout that holds them, retrying while another commit holds the lock,
    with the model card and the README's tables regenerated from them (benchmarks/derived.py)."""
    paths = [p.resolve() for p in paths]  # a relative path would be read against `git -C`'s folder, not ours
    repo = paths[0].parent
    top = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode == 0:
        paths = [*paths, *refresh_in(Path(top.stdout.strip()), paths)]
    for attempt in range(10):
        add = subprocess.run(["git", "-C", str(repo), "add", "--", *map(str, paths)], capture_output=True, text=True)
        done = add.returncode == 0 and subprocess.run(
            ["git", "-C", str(repo), "commit", "-q", "-m", message, "--only", "--", *map(str, paths)],
            capture_output=True, text=True).returncode == 0
        if done:
            return
        time.sleep(3 + attempt)
    print(f"warning: could not commit {', '.join(map(str, paths))}; commit it by hand", file=sys.stderr)


def load_results(results: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def grouped(records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    """Raw results by ``key`` (a variant, an arm and held-out domain), each group in the records' order."""
    by: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(key(r), []).append(r)
    return by


def require_results(results: Path) -> None:
    """``--table-only`` refuses a folder without raw results in one line, so that a mistyped path cannot
    overwrite a generated table with an empty one."""
    if not any(results.glob("*.json")):
        raise SystemExit(f"error: no raw results (*.json) in {results}; nothing to tabulate")


def plan_then_tables(args: Any, run_plan: Callable[[Any], None], tables: Callable[[Path], str]) -> int:
    """A driver's command line after parsing: ``--dry-run`` prints the plan and trains nothing;
    ``--table-only`` regenerates the tables from the raw results there; otherwise train what the
    plan lacks, then regenerate. Prints the tables; the exit status."""
    if args.dry_run:
        run_plan(args)
        return 0
    if args.table_only:
        require_results(args.results)
    else:
        args.results.mkdir(parents=True, exist_ok=True)
        run_plan(args)
        if getattr(args, "commit", False):
            # each result's commit brought its tables, made by the checkout's own code (benchmarks/derived.py);
            # writing them again here, with the code of the worktree a queue runs in, could leave the
            # checkout holding an older layout than it committed (the nested stage's last run did)
            return 0
    print(tables(args.results))
    return 0


def checkout_relative(path: Path) -> Path:
    """``path`` relative to the git checkout that holds it (this one, or a worktree the queue runs in), so
    that a generated file names it the same wherever it was generated; unchanged outside any checkout."""
    full = path.resolve()
    for parent in full.parents:
        if (parent / ".git").exists():
            return full.relative_to(parent)
    return path


def input_words(records: list[dict[str, Any]]) -> str:
    """The patch the network saw, as the runs' configs say: the full patch or its centre upscaled."""
    seen = sorted({(r["config"]["data"].get("center_crop") or 0, r["config"]["data"]["input_size"]) for r in records})
    return " / ".join(f"the central {crop} px upscaled to {size}" if crop else f"the full {size} px patch"
                      for crop, size in seen) or "–"


def config_setting(records: list[dict[str, Any]], section: str, key: str) -> str:
    """One setting as the runs recorded it: its value, or every value where the runs differ."""
    values = sorted({str(r["config"][section][key]) for r in records})
    return " / ".join(values) or "–"
