"""What pack, run and evaluate agree on: the file names in a pack, a job's inputs.json, which jobs a
pack holds and in what order, and how a job's output file is read."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from amf.errors import InputError
from amf.organizer import OUTPUT_FILENAME, SLUG

GROUND_TRUTH = "ground_truth.json"
DOMAIN_NAMES_FILE = "domains.json"  # domain number -> name, and the metadata column they came from
PACK = "pack.json"
RUN = "run.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.json"
OUTPUT_SLUG = "multiple-mitotic-figure-classification"


def inputs_json(image: str, slug: str = SLUG) -> list[dict[str, Any]]:
    """The inputs.json of one job, as in the organizer's sample (tests name another ``slug``)."""
    return [{
        "file": None,
        "image": {"name": image},
        "value": None,
        "interface": {
            "slug": slug, "kind": "Image", "super_kind": "Image",
            "relative_path": f"images/{slug}", "example_value": None,
        },
    }]


def image_of(input_dir: Path) -> str:
    try:
        entries = json.loads((input_dir / "inputs.json").read_text(encoding="utf-8"))
        return next(e["image"]["name"] for e in entries if e["interface"]["slug"] == SLUG)
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as err:
        raise InputError(f"{input_dir / 'inputs.json'} names no {SLUG} image: {err}") from err


class PackedJob(NamedTuple):
    name: str  # the job's folder under <pack>/jobs, e.g. stack_2
    input: Path  # <pack>/jobs/<name>/input
    image: str  # the stack's file name, as inputs.json names it


def packed_jobs(pack_dir: Path) -> list[PackedJob]:
    """The jobs of a pack, in job-number order (stack_2 before stack_10); empty if there are none."""
    found = sorted((pack_dir / "jobs").glob("*/input/inputs.json"), key=lambda p: natural_key(p.parent.parent.name))
    return [PackedJob(p.parent.parent.name, p.parent, image_of(p.parent)) for p in found]


def read_output(path: Path) -> tuple[Any, str | None]:
    """A job's output file as parsed JSON, or ``None`` and why it cannot be read."""
    if not path.is_file():
        return None, f"no output file: {OUTPUT_FILENAME} was not written"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"output is not JSON: {err}"


def natural_key(name: str) -> list[Any]:
    """Sorts stack_2 before stack_10, as the jobs were numbered."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
