"""Time `python -m leaderboard run` over 50 stacks: one job at a time vs. jobs in parallel.

    nice -n 10 .venv/bin/python benchmarks/leaderboard_run.py [--stacks 50] [--parallel N] [--model model]

Packs ``--stacks`` × 16 AMi-Br patches into a scratch folder, runs the same jobs with ``--jobs 1``
and ``--jobs N`` and writes benchmarks/results/leaderboard_run.md. The algorithm is the real
process.py with ``--model`` (default: the shipped model/); the metrics are checked, not reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amf.provenance import describe_machine, git_state  # noqa: E402
from leaderboard import DEFAULT_COMMAND, default_jobs, evaluate, pack, run  # noqa: E402


def timed_run(pack_dir: Path, out: Path, jobs: int, command: str, model: Path) -> dict:
    load = os.getloadavg()[0]
    t = time.perf_counter()
    report = run(pack_dir, out=out, command=command, model=model, jobs=jobs, progress=False)
    wall = time.perf_counter() - t
    evaluate(out, plots=False, log=lambda *a, **k: None)  # the outputs must be valid, or the timing is moot
    return {"jobs": jobs, "wall": wall, "median": report["job_wall_s"]["median"], "max": report["job_wall_s"]["max"],
            "threads": report["threads_per_job"], "load": load, "n": report["n_jobs"]}


def write_report(path: Path, rows: list[dict], description: str, args: argparse.Namespace, packed: dict) -> None:
    git = git_state(REPO)
    lines = [
        "# `leaderboard run`: sequential vs parallel jobs", "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {describe_machine()}",
        f"- repository: {git['commit']}{' + uncommitted changes' if git['dirty'] else ''}",
        f"- algorithm: {description}",
        f"- data: {packed['n_stacks']} stacks of up to 16 AMi-Br patches ({packed['n_cases']} patches), "
        f"`pack --limit {args.stacks * 16} --seed 0`",
        "- each job is a fresh `process.py` process (Python start, imports, model load, one stack); "
        "math threads per job = available CPUs / parallel jobs",
        f"- command: `nice -n 10 .venv/bin/python benchmarks/leaderboard_run.py --stacks {args.stacks}`",
        "",
        "| parallel jobs | threads/job | total wall (s) | stacks/min | job wall median (s) | job wall max (s) "
        "| 1-min load at start |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['jobs']} | {r['threads']} | {r['wall']:.1f} | {60 * r['n'] / r['wall']:.1f} | "
                     f"{r['median']:.2f} | {r['max']:.2f} | {r['load']:.2f} |")
    if len(rows) == 2:
        lines += ["", f"Speed-up of {rows[1]['jobs']} parallel jobs over 1: {rows[0]['wall'] / rows[1]['wall']:.2f}×."]
    lines += ["", args.note or "", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO.parent / "shared/data/ami-br/manifest.csv")
    parser.add_argument("--stacks", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=default_jobs(), help="parallel jobs for the second run")
    parser.add_argument("--model", type=Path, default=REPO / "model")
    parser.add_argument("--report", type=Path, default=REPO / "benchmarks/results/leaderboard_run.md")
    parser.add_argument("--note", default="", help="a line to add to the report (e.g. what else ran)")
    args = parser.parse_args()
    if not (args.model / "model.json").is_file():
        parser.error(f"--model {args.model} is not a model directory")
    description = f"process.py with the model in {args.model}"
    print(description, flush=True)
    with tempfile.TemporaryDirectory(prefix="amf-lb-bench-") as tmp:
        work = Path(tmp)
        packed = pack([args.manifest], work / "pack", limit=args.stacks * 16, domain_column="Tumor", seed=0,
                      log=lambda *a, **k: None)
        rows = []
        for jobs in dict.fromkeys([1, args.parallel]):
            rows.append(timed_run(work / "pack", work / f"run_{jobs}", jobs, DEFAULT_COMMAND, args.model))
            print(rows[-1], flush=True)
        write_report(args.report, rows, description, args, packed)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
