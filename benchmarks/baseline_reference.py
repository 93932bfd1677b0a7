"""Baseline in the style of the organizer's reference container, for latency comparison only.

Same job interface as process.py, but the reference design: a timm ``efficientnetv2_m`` at
224 px (each 128 px crop resized up), weights loaded from a checkpoint file, and a Python loop
over the pages with batch size 1. The weights are random; only speed and memory are measured.

    python benchmarks/baseline_reference.py --input DIR --output DIR --weights FILE [--device cpu]
    python benchmarks/baseline_reference.py --make-weights FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile
import timm
import torch
import torch.nn.functional as F

ARCH, SIZE = "efficientnetv2_m", 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def build() -> torch.nn.Module:
    return timm.create_model(ARCH, pretrained=False, num_classes=2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--make-weights", type=Path, help="save random weights to this file and exit")
    args = parser.parse_args()
    if args.make_weights:
        torch.manual_seed(0)
        torch.save(build().state_dict(), args.make_weights)
        return 0
    model = build()
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval().to(args.device)
    stack = next((args.input / "images" / "stacked-histopathology-roi-cropouts").glob("*.tif*"))
    pages = tifffile.imread(stack)
    results = []
    with torch.no_grad():
        for page in pages:  # one page at a time, as the reference does
            x = torch.from_numpy(np.ascontiguousarray(page)).permute(2, 0, 1)[None].float() / 255.0
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            x = ((x - MEAN) / STD).to(args.device)
            p = torch.softmax(model(x), dim=1)[0, 1].item()
            results.append({"class": "atypical" if p >= 0.5 else "normal", "confidence": p})
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "multiple-mitotic-figure-classification.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
