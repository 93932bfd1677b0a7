"""Where a warm ONNX Runtime forward spends its time, and how much work it is.

    python -m benchmarks.onnx_profile [--model model] [--pages 16] [--runs 10] [--threads 1]

Exports ``model.onnx`` afresh into a temporary copy of the model directory, counts the forward's
FLOPs with torch's FLOP counter, then profiles ``--runs`` warm ONNX Runtime runs on ``--pages``
pages (no TTA) and sums the kernel time per operator type. Writes the raw result to
``benchmarks/results/onnx_profile.json`` and a generated ``onnx_profile.md``: the numbers behind the
benchmarks page's explanation of the warm latency (benchmarks/README.md: achieved GFLOP/s in the convolutions).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def forward_flops(model_dir: Path, pages: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from amf.model_dir import load_model_dir

    loaded = load_model_dir(model_dir, "cpu")
    x = torch.zeros(pages, 3, loaded.input_size, loaded.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        loaded.model(x)
    return float(counter.get_total_flops())


def profile(graph: Path, pages: np.ndarray, runs: int, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    from amf.onnx_engine import GRAPH_INPUT, session_options

    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(graph.parent / "profile")
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    for _ in range(3):  # warm-up, profiled too: only the timed runs are summed below
        session.run(None, {GRAPH_INPUT: pages})
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {GRAPH_INPUT: pages})
        walls.append(time.perf_counter() - start)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed_from = runs_seen[-runs]["ts"] if len(runs_seen) >= runs else 0
    per_op: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= timed_from:
            per_op[e["args"].get("op_name", "?")] += e["dur"] / 1e3 / runs  # µs -> ms per run
    return {"wall_ms": [1e3 * w for w in walls], "kernel_ms_per_run": dict(per_op), "ort": ort.__version__}


def table(raw: dict[str, Any]) -> str:
    p, flops = raw["profile"], raw["flops"]
    kernel = p["kernel_ms_per_run"]
    total = sum(kernel.values())
    conv = kernel.get("Conv", 0.0)
    wall = statistics.median(p["wall_ms"])
    lines = [
        "# Where a warm ONNX Runtime forward spends its time",
        "",
        f"Generated from [`onnx_profile.json`](onnx_profile.json) by `python -m benchmarks.onnx_profile`. "
        f"Measured {raw['date'][:16].replace('T', ' ')} UTC at commit {raw['commit']['commit']}"
        f"{' (working tree dirty)' if raw['commit']['dirty'] else ''} on {raw['machine']['cpu']}, "
        f"{raw['machine']['cpus']} CPUs; onnxruntime {p['ort']}, {raw['threads']} thread(s); 1-minute load "
        f"average {raw['load_average'][0]:.2f} at the start. Model `{raw['model']}`, {raw['pages']} pages of "
        f"{raw['input_size']} px, no TTA, {raw['runs']} profiled warm runs.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| forward FLOPs ({raw['pages']} pages, torch's FLOP counter) | {flops / 1e9:.2f} GFLOP |",
        f"| wall time per run (median) | {wall:.1f} ms |",
        f"| kernel time per run, all operators | {total:.1f} ms |",
        f"| of which convolutions | {conv:.1f} ms ({100 * conv / total:.0f}%) |",
        f"| achieved in the convolutions | {flops / 1e9 / (conv / 1e3):.1f} GFLOP/s on {raw['threads']} thread(s) |",
        f"| needed for 30 ms per run (all FLOPs) | {flops / 1e9 / 0.030:.0f} GFLOP/s |",
        "",
        "| operator | ms per run | share |",
        "|---|---|---|",
        *[f"| {op} | {ms:.1f} | {100 * ms / total:.0f}% |"
          for op, ms in sorted(kernel.items(), key=lambda kv: -kv[1])[:8]],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from amf.onnx_engine import ONNX_NAME
    from amf.onnx_export import export_onnx
    from amf.provenance import git_state, machine
    from benchmarks.publish import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "model")
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS / "onnx_profile.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_profile.md")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="amf-onnx-profile-") as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(args.model, copy, ignore=shutil.ignore_patterns(ONNX_NAME))
        export_onnx(copy)
        size = json.loads((copy / "model.json").read_text())["input_size"]
        pages = np.random.default_rng(0).integers(0, 256, (args.pages, size, size, 3), dtype=np.uint8)
        raw = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_state(REPO),
               "machine": machine(), "load_average": list(load), "model": str(args.model.relative_to(REPO)
                                                                            if args.model.is_relative_to(REPO)
                                                                            else args.model),
               "pages": args.pages, "input_size": size, "runs": args.runs, "threads": args.threads,
               "flops": forward_flops(copy, args.pages), "profile": profile(copy / ONNX_NAME, pages, args.runs,
                                                                            args.threads)}
    return publish(raw, table, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())
