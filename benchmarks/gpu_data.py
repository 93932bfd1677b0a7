"""Pack what a lent GPU machine needs into ``.gpu/`` (git-ignored), under the 64 MiB a call may carry.

    python -m benchmarks.gpu_data                  # AMi-Br as WebP q95 + a 16-page AMi-Br stack
    python -m benchmarks.gpu_data --format jpeg    # JPEG q95 (4:4:4) instead, as on 2026-11-27

``../shared`` does not travel to the GPU machine, and everything git tracks travels with every
call. The 3,032 AMi-Br PNGs are 86 MiB, so the training copy is re-encoded lossily at quality 95
(say so wherever its numbers appear). WebP is the default since the shipped 5-member ensemble
(34 MB) joined the tracked tree: JPEG q95 4:4:4 (33 MiB) no longer fits beside it, WebP q95 (about
20 MiB, 4:2:0 chroma, so a little lossier) does; this command prints both sizes. The folder's name says its
encoding, so every result trained on it names it in its config. The 16-page stack for the CPU/GPU
agreement check stays lossless.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


ENCODINGS = {"webp": ("WEBP", ".webp", {"method": 6}), "jpeg": ("JPEG", ".jpg", {"subsampling": 0})}
CARRY_LIMIT = 64 * 2**20


def copy_name(fmt: str, quality: int) -> str:
    """``ami-br-webp95``: the encoding is in the path every config records."""
    return f"ami-br-{fmt}{quality}"


def pack_training_copy(manifest: Path, out: Path, fmt: str, quality: int) -> int:
    """Lossy copies of every patch and a manifest that names them; returns the bytes written."""
    pil_format, suffix, options = ENCODINGS[fmt]
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        columns, rows = list(reader.fieldnames or []), list(reader)
    total = 0
    for row in rows:
        name = Path(row["image_id"]).with_suffix(suffix).name
        with Image.open(manifest.parent / "images" / row["image_id"]) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, pil_format, quality=quality, **options)
        (images / name).write_bytes(buf.getvalue())
        total += buf.tell()
        row["image_id"] = name
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    return total


def tracked_bytes(repo: Path = REPO) -> int:
    """What travels with every call anyway: the files git tracks."""
    import subprocess

    names = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    return sum((repo / n).stat().st_size for n in names.decode().split("\0") if n and (repo / n).is_file())


def pack_stack(manifest: Path, out: Path, pages: int = 16, seed: int = 0) -> Path:
    """A Grand Challenge job of one stack of real AMi-Br patches, lossless."""
    import json

    from amf.organizer import SLUG
    from leaderboard.layout import inputs_json
    from leaderboard.packing import write_stack

    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    pick = np.random.default_rng(seed).choice(len(rows), pages, replace=False)
    patches = [np.asarray(Image.open(manifest.parent / "images" / rows[i]["image_id"]).convert("RGB")) for i in pick]
    write_stack(out / "images" / SLUG / "stack16.tiff", patches)
    (out / "inputs.json").write_text(json.dumps(inputs_json("stack16.tiff"), indent=2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=REPO.parent / "shared/data/ami-br/manifest.csv")
    parser.add_argument("--out", type=Path, default=REPO / ".gpu")
    parser.add_argument("--format", choices=sorted(ENCODINGS), default="webp")
    parser.add_argument("--quality", type=int, default=95, help="at least 95, as the recipe issue asks")
    args = parser.parse_args()
    if not args.manifest.is_file():
        print(f"error: {args.manifest} does not exist", file=sys.stderr)
        return 2
    if not 95 <= args.quality <= 100:
        print(f"error: --quality {args.quality}: use 95..100", file=sys.stderr)
        return 2
    copy = args.out / copy_name(args.format, args.quality)
    size = pack_training_copy(args.manifest, copy, args.format, args.quality)
    job = pack_stack(args.manifest, args.out / "stack16")
    tree = tracked_bytes()
    print(f"{copy}: {size / 2**20:.1f} MiB of {args.format} q{args.quality}; 16-page stack job in {job}")
    print(f"a call carrying it sends {(tree + size) / 2**20:.1f} MiB with the tracked tree "
          f"({tree / 2**20:.1f} MiB); the limit is {CARRY_LIMIT / 2**20:.0f} MiB")
    if tree + size > CARRY_LIMIT:
        print("error: that is over the limit; try --format webp or carry less", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
