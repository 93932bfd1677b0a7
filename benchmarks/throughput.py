"""Training throughput (images/s) of one recipe step, each part switched on alone and all together.

    python -m benchmarks.throughput                      # CPU here; CUDA too where there is one
    python -m benchmarks.throughput --steps 30 --batch-size 256 --device cuda

A step is exactly what training runs: batch augmentation (both views), the student's forward
and backward, the alignment loss, the EMA teacher's forward and update.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from amf.atomic import write_json_atomic
from amf.network import create_model
from amf.provenance import describe_machine, git_state, machine
from benchmarks.ablation import ARMS
from training.config import load_config
from training.recipe import MixAlignDistil


def synthetic_batch(n: int, size: int) -> dict[str, Any]:
    """A training batch of random pixels with AMi-Br's pattern of weak labels (the step's cost, not its learning)."""
    g = torch.Generator().manual_seed(0)
    sites = torch.arange(n) % 3 - 1  # two known sites and unknowns, as in AMi-Br
    return {
        "images": torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g),
        "labels": torch.arange(n) % 2,
        "sites": sites,
        "weak_labels": {"Scanner": sites, "Origin": torch.arange(n) % 2, "Species": torch.zeros(n, dtype=torch.long),
                        "Tumor": torch.zeros(n, dtype=torch.long)},
    }


def recipe_step(cfg: Any, device: torch.device, batch_size: int) -> Callable[[], None]:
    """One training step of ``cfg`` on a fixed synthetic batch, as a call (the timed unit here and in
    benchmarks/step_time.py)."""
    torch.manual_seed(0)
    algo = MixAlignDistil(cfg, create_model(cfg.model.backbone, attention=cfg.model.attention), device,
                          steps_per_epoch=1000, class_counts=[4, 1])
    batch = synthetic_batch(batch_size, cfg.data.input_size)

    def step() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        algo.update(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def measure(arm: str, extra: list[str], device: torch.device, batch_size: int, steps: int, warmup: int) -> float:
    cfg = load_config(Path("training/configs/default.yaml"), [*ARMS[arm], *extra, f"optim.batch_size={batch_size}"])
    step = recipe_step(cfg, device, batch_size)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also measure bf16 autocast on the CPU")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file the section is appended to")
    parser.add_argument("--json", type=Path, default=None,
                        help="raw results (default: beside --out, named after it with .json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    precisions = {"fp32": []} if device.type == "cpu" else {"fp16 AMP": ["run.amp=true"]}
    if args.bf16 and device.type == "cpu":
        precisions["bf16 autocast"] = ["run.cpu_bf16=true"]
    results = {p: {arm: measure(arm, extra, device, args.batch_size, args.steps, args.warmup) for arm in ARMS}
               for p, extra in precisions.items()}
    raw = {"benchmark": "throughput", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "commit": git_state(Path(__file__).resolve().parents[1]), "machine": machine(),
           "machine_text": describe_machine(), "device": device.type,
           "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "images_per_s": results}
    raw_path = args.json or (args.out.with_suffix(".json") if args.out else None)
    if raw_path:
        write_json_atomic(raw_path, raw, indent=1)
    text = section(raw)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    return 0


def section(raw: dict[str, Any]) -> str:
    """The Markdown section of one measurement, from its raw record alone."""
    results, a = raw["images_per_s"], raw["args"]
    lines = [f"## {raw['device'].upper()}: {raw['machine_text']}", "",
             f"Batch {a['batch_size']} at 128 px, EfficientNet-Lite0 + CBAM, channels_last; median of {a['steps']} "
             f"steps after {a['warmup']} warm-up steps.", "",
             "| arm | " + " | ".join(f"{p} images/s | {p} step vs ERM" for p in results) + " |",
             "|---|" + "---|---|" * len(results)]
    for arm in ARMS:
        cells = [f"{results[p][arm]:.1f} | {results[p]['ERM'] / results[p][arm]:.2f}×" for p in results]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
