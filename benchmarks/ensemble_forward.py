"""How should K members run: one batched computation (torch.func.vmap) or one after another?

    python -m benchmarks.ensemble_forward [--members 5] [--pages 16] [--runs 10] [--device cpu]

Warm forward of a K-member random-weight ensemble (the shipped architecture, weights do not
change speed) on ``--pages`` pages without TTA, with both engines of ``amf.network.MemberEnsemble``,
against one network with dihedral4 TTA (what ships today). Writes the raw numbers to
``benchmarks/results/ensemble_forward.json``; ``MemberEnsemble``'s ``auto`` engine follows them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from amf.atomic import write_json_atomic
from amf.network import MemberEnsemble, create_model
from amf.predict import predict_proba
from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD
from amf.provenance import describe_machine, git_state

REPO = Path(__file__).resolve().parents[1]


def timed(fn, runs: int) -> dict[str, float]:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/ensemble_forward.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    load_at_start = os.getloadavg()[0]
    torch.manual_seed(0)
    members = [create_model(args.backbone).eval() for _ in range(args.members)]
    ensemble = MemberEnsemble(members[0], [m.state_dict() for m in members]).to(device)
    single = members[0].to(device).to(memory_format=torch.channels_last)
    pages = np.random.default_rng(0).integers(0, 256, (args.pages, 128, 128, 3), dtype=np.uint8)
    kw = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(model, tta):
        return lambda: (predict_proba(model, pages, tta=tta, **kw), sync())

    result = {"single_dihedral4": timed(run(single, "dihedral4"), args.runs),
              "single_none": timed(run(single, "none"), args.runs)}
    for engine in ("loop", "vmap"):
        ensemble.engine = engine
        result[f"ensemble_{engine}_none"] = timed(run(ensemble, "none"), args.runs)
    base = result["single_dihedral4"]["median_ms"]
    raw = {"members": args.members, "pages": args.pages, "backbone": args.backbone, "device": str(device),
           "threads": torch.get_num_threads(), "machine": describe_machine(), "code": git_state(REPO),
           "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": result,
           "relative_to_single_dihedral4": {k: v["median_ms"] / base for k, v in result.items()}}
    write_json_atomic(args.out, raw)
    for k, v in result.items():
        print(f"{k:24s} {v['median_ms']:8.1f} ms  ({v['median_ms'] / base:.2f}× single dihedral4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
