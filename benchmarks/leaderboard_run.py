"""Time `python -m amf.leaderboard run` over 50 stacks: one job at a time vs. jobs in parallel.

    nice -n 10 .venv/bin/python benchmarks/leaderboard_run.py [--stacks 50] [--parallel N] [--model model]

Packs ``--stacks`` × 16 AMi-Br patches into a scratch folder, runs the same jobs with ``--jobs 1``
and ``--jobs N`` and writes benchmarks/results/leaderboard_run.md. The algorithm is the real
process.py; with no trained ``model/`` it gets a random-weight model of the default architecture
(the same computation, so the same time; the metrics of such a run mean nothing and are not
reported). Without process.py a stand-in that only reads the stacks is timed, and labelled so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amf.leaderboard import DEFAULT_COMMAND, default_jobs, evaluate, pack, run  # noqa: E402

STAND_IN = """
import json, pathlib, sys, tifffile
inp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
stack = next((inp / "images" / "stacked-histopathology-roi-cropouts").glob("*.tif*"))
with tifffile.TiffFile(stack) as tif:
    n = len(tif.pages)
(out / "multiple-mitotic-figure-classification.json").write_text(
    json.dumps([{"class": "normal", "confidence": 0.9}] * n))
"""


def random_model(path: Path) -> Path:
    from amf.model_dir import architecture_of, save_model_dir
    from amf.network import create_model
    from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD

    backbone = "tf_efficientnet_lite0"
    model = create_model(backbone)
    return save_model_dir(path, model, {
        "architecture": architecture_of(model, backbone, 0.2), "input_size": 128, "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD), "class_names": ["normal", "atypical"], "threshold": 0.5, "tta": "none"})


def algorithm(work: Path, model: Path | None) -> tuple[str, Path, str]:
    """(command template, model dir, description) for the run."""
    if not (REPO / "process.py").is_file():
        script = work / "stand_in.py"
        script.write_text(STAND_IN)
        return (f"{{python}} {script} {{input}} {{output}}", work,
                "STAND-IN (no process.py yet): a script that reads each stack with tifffile, writes a constant answer")
    if model and (model / "model.json").is_file():
        return DEFAULT_COMMAND, model, f"process.py with the trained model in {model}"
    return (DEFAULT_COMMAND, random_model(work / "random_model"),
            "process.py with a RANDOM-WEIGHT tf_efficientnet_lite0 + CBAM model directory (no trained model/ yet; "
            "same architecture and input size, so the same work per job)")


def machine() -> dict[str, str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": model, "nproc": nproc, "memory": f"{mem:.1f} GiB", "python": platform.python_version()}


def git_commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return done.stdout.strip() + (" + uncommitted changes" if dirty else "")


def timed_run(pack_dir: Path, out: Path, jobs: int, command: str, model: Path) -> dict:
    load = os.getloadavg()[0]
    t = time.perf_counter()
    report = run(pack_dir, out=out, command=command, model=model, jobs=jobs, progress=False)
    wall = time.perf_counter() - t
    evaluate(out, plots=False, log=lambda *a, **k: None)  # the outputs must be valid, or the timing is moot
    return {"jobs": jobs, "wall": wall, "median": report["job_wall_s"]["median"], "max": report["job_wall_s"]["max"],
            "threads": report["threads_per_job"], "load": load, "n": report["n_jobs"]}


def write_report(path: Path, rows: list[dict], description: str, args: argparse.Namespace, packed: dict) -> None:
    m = machine()
    lines = [
        "# `amf.leaderboard run`: sequential vs parallel jobs", "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {m['cpu']}, nproc {m['nproc']}, {m['memory']} memory, no GPU; Python {m['python']}",
        f"- repository: {git_commit()}",
        f"- algorithm: {description}",
        f"- data: {packed['n_stacks']} stacks of up to 16 AMi-Br patches ({packed['n_cases']} patches), "
        f"`pack --limit {args.stacks * 16} --seed 0`",
        "- each job is a fresh `process.py` process (Python start, imports, model load, one stack); "
        "math threads per job = nproc / parallel jobs",
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
    with tempfile.TemporaryDirectory(prefix="amf-lb-bench-") as tmp:
        work = Path(tmp)
        packed = pack([args.manifest], work / "pack", limit=args.stacks * 16, domain_column="Tumor", seed=0,
                      log=lambda *a, **k: None)
        command, model, description = algorithm(work, args.model)
        print(description, flush=True)
        rows = []
        for jobs in dict.fromkeys([1, args.parallel]):
            rows.append(timed_run(work / "pack", work / f"run_{jobs}", jobs, command, model))
            print(rows[-1], flush=True)
        write_report(args.report, rows, description, args, packed)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
