"""What pack, run and evaluate agree on: the file names in a pack, a job's inputs.json, job order."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from amf.errors import InputError
from amf.organizer import SLUG

GROUND_TRUTH = "ground_truth.json"
DOMAINS = "domains.json"
PACK = "pack.json"
RUN = "run.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.json"
OUTPUT_SLUG = "multiple-mitotic-figure-classification"


def inputs_json(image: str) -> list[dict[str, Any]]:
    """The inputs.json of one job, as in the organizer's sample."""
    return [{
        "file": None,
        "image": {"name": image},
        "value": None,
        "interface": {
            "slug": SLUG, "kind": "Image", "super_kind": "Image",
            "relative_path": f"images/{SLUG}", "example_value": None,
        },
    }]


def image_of(input_dir: Path) -> str:
    try:
        entries = json.loads((input_dir / "inputs.json").read_text(encoding="utf-8"))
        return next(e["image"]["name"] for e in entries if e["interface"]["slug"] == SLUG)
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as err:
        raise InputError(f"{input_dir / 'inputs.json'} names no {SLUG} image: {err}") from err


def natural_key(name: str) -> list[Any]:
    """Sorts stack_2 before stack_10, as the jobs were numbered."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
