"""Training throughput of ViT backbones under the full recipe: full fine-tuning against LoRA.

    python -m benchmarks.vit_throughput --device cuda                  # ViT-S/16 and ViT-B/16 at 224 px
    python -m benchmarks.vit_throughput --device cuda --batch-size 128 --steps 30
    python -m benchmarks.vit_throughput --dry-run                      # CPU, 2 blocks, 1 step: the script runs

A step is exactly what training runs (``MixAlignDistil.update``): batch augmentation (both views),
Mix on the patch tokens of ``blocks.2`` and ``blocks.5``, the student's forward and backward, the
alignment loss, the EMA teacher's forward and update; fp16 autocast on CUDA. Weights are random
(timm's ``vit_small_patch16_224`` and ``vit_base_patch16_224``, no download): throughput and memory
do not depend on them. Raw results, one record per backbone and arm with every step's time and the
peak CUDA memory, go to ``benchmarks/results/vit_throughput_<device>.json`` (a dry run writes only
where ``--out`` says).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from amf.backbones import resolve_backbone
from amf.network import create_model
from amf.provenance import describe_machine
from benchmarks.throughput import synthetic_batch
from training.config import load_config
from training.recipe import MixAlignDistil

BACKBONES = {"ViT-S/16": "vit_small_patch16_224", "ViT-B/16": "vit_base_patch16_224"}
ARMS = {"full fine-tune": [], "LoRA r8": ["model.lora.rank=8"]}
RESULTS = Path(__file__).parent / "results"


def measure(backbone: str, arm: list[str], device: torch.device, batch_size: int, size: int, steps: int,
            warmup: int, depth: int | None) -> dict[str, Any]:
    overrides = [f"model.backbone={backbone}", f"data.input_size={size}", "mix.stages=[blocks.0,blocks.1]"
                 if depth and depth < 6 else "mix.stages=[blocks.2,blocks.5]", f"optim.batch_size={batch_size}",
                 "model.pretrained=none", "run.grad_probe_every=0", *arm]
    if depth:
        overrides.append(f"model.backbone_kwargs.depth={depth}")
    cfg = load_config(None, overrides)
    spec = resolve_backbone(cfg.model.backbone, cfg.model.backbone_kwargs)
    torch.manual_seed(0)
    model = create_model(spec.architecture, attention=cfg.model.attention, drop_path_rate=cfg.model.drop_path_rate,
                         backbone_kwargs=spec.kwargs)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    algo = MixAlignDistil(cfg, model, device, steps_per_epoch=1000, class_counts=[4, 1])
    batch = synthetic_batch(batch_size, size)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        algo.update(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    record = {"backbone": backbone, "overrides": overrides, "batch_size": batch_size, "input_px": size,
              "resize_to": algo.inputs.resize_to, "step_seconds": times,
              "images_per_s": batch_size / statistics.median(times), **algo.parameter_counts}
    if device.type == "cuda":
        record["peak_cuda_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del algo, model
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="patch side fed to the network (its native size)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--depth", type=int, default=None, help="fewer blocks (dry runs only)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, batch 2, 2 blocks, 1 step: checks it runs")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/vit_throughput_<device>.json")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.batch_size, args.steps, args.warmup, args.depth = "cpu", 2, 1, 0, args.depth or 2
    device = torch.device(args.device)
    out = args.out or (None if args.dry_run else RESULTS / f"vit_throughput_{device.type}.json")
    runs = []
    for label, backbone in BACKBONES.items():
        for arm, extra in ARMS.items():
            r = measure(backbone, extra, device, args.batch_size, args.size, args.steps, args.warmup, args.depth)
            runs.append({"model": label, "arm": arm, **r})
            memory = f", peak {r['peak_cuda_allocated_gib']:.2f} GiB" if "peak_cuda_allocated_gib" in r else ""
            print(f"{label} {arm}: {r['images_per_s']:.1f} images/s, {r['trainable_parameters']:,} of "
                  f"{r['total_parameters']:,} parameters train{memory}", flush=True)
    report = {"benchmark": "vit_throughput", "machine": describe_machine(), "device": str(device),
              "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "dry_run": args.dry_run, "steps": args.steps, "warmup": args.warmup,
              "depth": args.depth, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
