"""The organizer's side of a Grand Challenge job: where the stack is, what the answer must look like.

Input: ``inputs.json`` lists the interface ``stacked-histopathology-roi-cropouts``; its image
lives under ``images/stacked-histopathology-roi-cropouts/``. Output: a list with one entry per
page, in page order, ``{"class": "normal"|"atypical", "confidence": P(atypical)}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amf import CLASS_NAMES
from amf.atomic import write_json_atomic
from amf.errors import InputError, PredictionError

SLUG = "stacked-histopathology-roi-cropouts"
OUTPUT_FILENAME = "multiple-mitotic-figure-classification.json"
STACK_SUFFIXES = (".tif", ".tiff", ".mha", ".mhd")


def _stack_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in STACK_SUFFIXES)


def find_stack(input_dir: str | Path) -> tuple[Path, str]:
    """The stack of this job and how it was found (for the log)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} does not exist")
    folder = input_dir / "images" / SLUG
    inputs_json = input_dir / "inputs.json"
    wanted: str | None = None
    if inputs_json.is_file():
        try:
            entries = json.loads(inputs_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read {inputs_json}: {err}") from err
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InputError(f"{inputs_json} is not a list of interface entries")
        slugs = [str((e.get("interface") or {}).get("slug")) for e in entries]
        if SLUG not in slugs:
            raise InputError(f"{inputs_json} lists interfaces {slugs}; this algorithm reads only {SLUG!r}")
        entry = entries[slugs.index(SLUG)]
        folder = input_dir / ((entry.get("interface") or {}).get("relative_path") or f"images/{SLUG}")
        wanted = ((entry.get("image") or {}).get("name")) or None
        how = f"inputs.json, interface {SLUG}"
    else:
        how = f"no inputs.json, so the interface folder images/{SLUG} is read directly"
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist")
    if wanted and (folder / wanted).is_file():
        return folder / wanted, how
    candidates = _stack_files(folder)
    if not candidates:
        raise InputError(f"no .tif/.tiff/.mha stack in {folder}")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates[:5])
        raise InputError(f"{len(candidates)} stacks in {folder} ({names}); a job holds exactly one")
    return candidates[0], how


def to_entries(probabilities: Sequence[float], threshold: float) -> list[dict[str, Any]]:
    """Organizer entries: the class from the threshold, the confidence always P(atypical)."""
    return [
        {"class": CLASS_NAMES[1] if float(p) >= threshold else CLASS_NAMES[0], "confidence": float(p)}
        for p in probabilities
    ]


def validation_errors(predictions: Any, n_pages: int | None = None) -> list[str]:
    """Every reason the organizer's evaluator would reject this output; empty when it is valid."""
    if not isinstance(predictions, list):
        return [f"predictions must be a list, got {type(predictions).__name__}"]
    errors = []
    if n_pages is not None and len(predictions) != n_pages:
        errors.append(f"expected {n_pages} predictions (one per page), got {len(predictions)}")
    for i, entry in enumerate(predictions):
        if not isinstance(entry, dict):
            errors.append(f"entry {i} must be a dict, got {type(entry).__name__}")
            continue
        missing = [k for k in ("class", "confidence") if k not in entry]
        if missing:
            errors.append(f"entry {i} lacks {', '.join(missing)}")
            continue
        if entry["class"] not in CLASS_NAMES:
            errors.append(f"entry {i} has class {entry['class']!r}; allowed: {', '.join(CLASS_NAMES)}")
        conf = entry["confidence"]
        if type(conf) is not float:
            errors.append(f"entry {i} has confidence of type {type(conf).__name__}; it must be a float")
        elif not math.isfinite(conf) or not 0.0 <= conf <= 1.0:
            errors.append(f"entry {i} has confidence {conf}; it must be a probability in [0, 1]")
    return errors


def write_output(output_dir: str | Path, predictions: list[dict[str, Any]], n_pages: int) -> Path:
    """Validate against the organizer's rules, then write atomically. Nothing is written if invalid."""
    errors = validation_errors(predictions, n_pages)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PredictionError(f"output rejected before writing: {errors[0]}{more}")
    return write_json_atomic(Path(output_dir) / OUTPUT_FILENAME, predictions)
