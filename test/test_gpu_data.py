"""benchmarks/gpu_data.py: the lossy copy that travels to a lent GPU, and how tables name it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import gpu_data
from benchmarks.ablation import lossy_copy


def tiny_manifest(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "filename", "majority", "Scanner"])
        for i in range(n):
            # smooth colour fields, as stained tissue is, so the lossy error is meaningful
            base = rng.integers(60, 200, 3)
            page = np.clip(base + np.linspace(-20, 20, 64)[:, None, None] + rng.normal(0, 2, (64, 64, 3)), 0, 255)
            Image.fromarray(page.astype(np.uint8)).save(root / "images" / f"p{i}.png")
            writer.writerow([f"p{i}.png", f"s{i}", "AMF" if i else "NMF", "XR"])
    return root / "manifest.csv"


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_the_copy_keeps_every_row_and_column_and_stays_close(tmp_path: Path, fmt: str) -> None:
    manifest = tiny_manifest(tmp_path / "src")
    out = tmp_path / gpu_data.copy_name(fmt, 95)
    size = gpu_data.pack_training_copy(manifest, out, fmt, 95)
    with open(manifest, newline="") as a, open(out / "manifest.csv", newline="") as b:
        before, after = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["majority"] for r in after] == [r["majority"] for r in before] and after[0].keys() == before[0].keys()
    suffix = gpu_data.ENCODINGS[fmt][1]
    assert all(r["image_id"].endswith(suffix) for r in after)
    assert size == sum((out / "images" / r["image_id"]).stat().st_size for r in after)
    for old, new in zip(before, after, strict=True):
        original = np.asarray(Image.open(manifest.parent / "images" / old["image_id"]), dtype=np.float64)
        copied = np.asarray(Image.open(out / "images" / new["image_id"]).convert("RGB"), dtype=np.float64)
        assert copied.shape == original.shape and np.abs(copied - original).mean() < 3.0


def test_tables_name_the_copy_they_trained_on() -> None:
    assert lossy_copy([".gpu/ami-br/manifest.csv"]) == "JPEG quality-95"  # the first copy, 2026-11-27
    assert lossy_copy([".gpu/ami-br-webp95/manifest.csv"]) == "WebP quality-95"
    assert lossy_copy([".gpu/ami-br-jpeg97/manifest.csv", "../shared/data/ami-br/manifest.csv"]) == "JPEG quality-97"


def test_the_tracked_tree_is_counted_as_travelling() -> None:
    tracked = gpu_data.tracked_bytes()
    assert tracked > (gpu_data.REPO / "model" / "model.safetensors").stat().st_size
