"""Training-step time of a study's variants, paired on one machine, for its table's speed columns.

    python -m benchmarks.step_time backbone             # writes benchmarks/results/backbone_step_time.json
    python -m benchmarks.step_time backbone --commit    # and commits it with the regenerated backbone.md
    python -m benchmarks.step_time crop --rounds 2 --steps 1 --out /tmp/t.json   # a quick look

Each study run logs its own speed, but on whatever machine it ran and beside whatever else ran
there: the studies' runs span sessions, so their logged step times cannot be compared. Here every
variant's full recipe step (benchmarks/throughput.py's: batch augmentation of both views, student
forward/backward, alignment, EMA teacher) runs on a fixed synthetic batch in one process, the
variants taking turns step by step, round after round, with the order reversed each round, so that
a change in the machine's speed (another job, thermal state) falls on every variant alike. Run it
on an otherwise idle machine; it says which machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from amf.atomic import write_json_atomic
from amf.provenance import describe_machine, git_state, machine
from benchmarks.answers import BASE_CONFIG
from benchmarks.driver import REPO, commit_files
from benchmarks.studies import BASE, STUDIES, step_time_path, write_table
from benchmarks.throughput import recipe_step
from training.config import load_config


def measure(steps_by_variant: dict[str, Any], rounds: int, steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of every timed step, per variant: ``warmup`` untimed steps each, then ``rounds`` rounds in
    which each variant runs ``steps`` timed steps, the variants' order reversed every other round."""
    names = list(steps_by_variant)
    for name in names:
        for _ in range(warmup):
            steps_by_variant[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(steps):
                t0 = time.perf_counter()
                steps_by_variant[name]()
                times[name].append(time.perf_counter() - t0)
    return times


def summary(times: dict[str, list[float]], batch_size: int, steps: int) -> dict[str, dict[str, Any]]:
    """Median seconds per step and images per second over all timed steps, and the step relative to the
    first (reference) variant's: the median of the per-round ratios (each round's variants ran back to
    back, so a ratio within a round is the paired comparison), with their range across rounds."""
    ref_name = next(iter(times))

    def per_round(t: list[float]) -> list[float]:
        return [statistics.median(t[i:i + steps]) for i in range(0, len(t), steps)]

    ref_rounds = per_round(times[ref_name])
    out: dict[str, dict[str, Any]] = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(per_round(t), ref_rounds, strict=True)]
        out[name] = {"step_seconds_median": statistics.median(t), "images_per_s": batch_size / statistics.median(t),
                     "step_vs_reference": statistics.median(ratios),
                     "step_vs_reference_range": [min(ratios), max(ratios)]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=list(STUDIES))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="default: the batch the study's runs trained at")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, as the study's runs trained")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/studies",
                        help="the study's raw run results (its table is regenerated beside them)")
    parser.add_argument("--out", type=Path, help="the raw JSON (default: beside the study's table)")
    parser.add_argument("--commit", action="store_true", help="git-commit the JSON and the regenerated table")
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps) < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be at least 1, --warmup at least 0")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = STUDIES[args.study]
    configs = {name: load_config(REPO / BASE_CONFIG, [*BASE, *overrides]) for name, overrides in variants.items()}
    batch = {cfg.optim.batch_size for cfg in configs.values()}
    if len(batch) != 1:
        parser.error(f"the {args.study} study's variants train at different batch sizes {sorted(batch)}")
    batch_size = args.batch_size or batch.pop()
    input_size = next(iter(configs.values())).data.input_size
    print(f"{args.study}: {len(variants)} variants, batch {batch_size}, {args.rounds} rounds × {args.steps} steps",
          file=sys.stderr)
    times = measure({name: recipe_step(cfg, device, batch_size) for name, cfg in configs.items()},
                    args.rounds, args.steps, args.warmup)
    raw = {"benchmark": "step_time", "study": args.study,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": git_state(REPO),
           "machine": machine(), "machine_text": describe_machine(), "device": device.type,
           "threads": args.threads, "batch_size": batch_size, "input_size": input_size,
           "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
           "overrides": {"base": [BASE_CONFIG, *BASE], **variants},
           "step_seconds": times, "summary": summary(times, batch_size, args.steps)}
    out = args.out or step_time_path(args.study, args.results)
    write_json_atomic(out, raw, indent=1)
    for name, s in raw["summary"].items():
        low, high = s["step_vs_reference_range"]
        print(f"{name}: {s['step_seconds_median']:.3f} s/step, {s['images_per_s']:.1f} images/s, "
              f"{s['step_vs_reference']:.2f}× the reference ({low:.2f}–{high:.2f} over rounds)")
    if args.commit:
        table, _ = write_table(args.study, args.results)
        commit_files([out, table], f"step time of the {args.study} study's variants, paired on one machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
