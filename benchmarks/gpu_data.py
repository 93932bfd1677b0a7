"""Pack what a lent GPU machine needs into ``.gpu/`` (git-ignored), under the 64 MiB a call may carry.

    python -m benchmarks.gpu_data                  # AMi-Br as JPEG q95 + a 16-page AMi-Br stack

``../shared`` does not travel to the GPU machine. The 3,032 AMi-Br PNGs are 149 MB decoded, so
the training copy is re-encoded as JPEG at quality 95 (lossy: say so wherever its numbers
appear); the 16-page stack for the CPU/GPU agreement check stays lossless.
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


def pack_training_copy(manifest: Path, out: Path, quality: int) -> int:
    """JPEG copies of every patch and a manifest that names them; returns the bytes written."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        columns, rows = list(reader.fieldnames or []), list(reader)
    total = 0
    for row in rows:
        name = Path(row["image_id"]).with_suffix(".jpg").name
        with Image.open(manifest.parent / "images" / row["image_id"]) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=quality, subsampling=0)
        (images / name).write_bytes(buf.getvalue())
        total += buf.tell()
        row["image_id"] = name
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    return total


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
    parser.add_argument("--quality", type=int, default=95)
    args = parser.parse_args()
    if not args.manifest.is_file():
        print(f"error: {args.manifest} does not exist", file=sys.stderr)
        return 2
    size = pack_training_copy(args.manifest, args.out / "ami-br", args.quality)
    job = pack_stack(args.manifest, args.out / "stack16")
    print(f"{args.out / 'ami-br'}: {size / 2**20:.1f} MiB of JPEG q{args.quality}; 16-page stack job in {job}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
