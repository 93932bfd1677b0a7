"""The organizer's side of a Grand Challenge job: where the stack is, what the answer must look like.

Input: ``inputs.json`` lists the interface ``stacked-histopathology-roi-cropouts``; its image
lives under ``images/stacked-histopathology-roi-cropouts/``. Output: a list with one entry per
page, in page order, ``{"class": "normal"|"atypical", "confidence": P(atypical)}``, the
confidence being P(atypical) whichever class wins (see :func:`to_entries`).
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
    """Organizer entries: the class from the threshold, the confidence always P(atypical).

    This follows the challenge's output contract and the example in the organizer's evaluation
    README (normal pages with confidences such as 0.03 and 0.47). One published version of the
    evaluator (DeepMicroscopy/MIDOG25_T2_evaluation_docker, evaluate.py at 0b35ad16) instead reads
    a normal page's confidence as P(normal) and ranks it by 1 - confidence; see README,
    "Confidence semantics", before changing this.
    """
    return [
        {"class": CLASS_NAMES[1] if float(p) >= threshold else CLASS_NAMES[0], "confidence": float(p)}
        for p in probabilities
    ]


def score_of(entry: dict[str, Any]) -> float:
    """The ranking score (P(atypical)) of a valid entry, whichever class it names."""
    return float(entry["confidence"])


# The organizer's own wording, so a local rejection reads like the platform's.
WRONG_ENTRY = "Output format is wrong. Needs list of dictionaries."
WRONG_KEYS = 'Output format is wrong. Needs to be list of dictionaries with entries "class" and "confidence"'
WRONG_CLASS = "Output format is wrong. Class needs to be either normal or atypical."
WRONG_CONFIDENCE = "Output format is wrong. Confidence needs to be of type float."


def _length_error(n_results: int, n_pages: int) -> str:
    return f"Results length does not match GT length. (result lengths={n_results}, GT length={n_pages})"


def _entry_errors(i: int, entry: Any, strict: bool) -> list[str]:
    if not isinstance(entry, dict):
        return [f"entry {i}: {WRONG_ENTRY} (got {type(entry).__name__})"]
    if "class" not in entry or "confidence" not in entry:
        return [f"entry {i}: {WRONG_KEYS} (has {sorted(map(str, entry))})"]
    errors = []
    if entry["class"] not in CLASS_NAMES:
        errors.append(f"entry {i}: {WRONG_CLASS} (got {entry['class']!r})")
    conf = entry["confidence"]
    # isinstance, as the organizer checks: a JSON 1 or 0 is an int and is rejected, 1.0 is not
    if not isinstance(conf, float):
        errors.append(f"entry {i}: {WRONG_CONFIDENCE} (got {type(conf).__name__} {conf!r})")
    elif not math.isfinite(conf):
        # the organizer's type check passes NaN/inf, then scikit-learn's ROC AUC aborts on them
        errors.append(f"entry {i}: confidence is {conf}; the organizer's ROC AUC (scikit-learn) fails on "
                      "non-finite input")
    elif strict and not 0.0 <= conf <= 1.0:
        errors.append(f"entry {i}: confidence {conf} is not a probability in [0, 1] (the organizer does not "
                      "check this, but it is meant to be P(atypical))")
    return errors


def validation_errors(predictions: Any, n_pages: int | None = None, *, strict: bool = True) -> list[str]:
    """Every reason the organizer's evaluator would reject this output; empty when it is valid.

    The organizer checks, in this order: the length against the ground truth, then per entry
    that it is a dict, has "class" and "confidence", the class is normal/atypical and the
    confidence a float (an int is rejected). It stops at the first; this lists all of them.
    Non-finite confidences pass its checks but abort its ROC AUC, so they are rejected too.
    ``strict`` adds a check the organizer does not make: the confidence must lie in [0, 1].
    """
    if not isinstance(predictions, list):
        # the organizer iterates whatever it got: a dict or string yields non-dict entries
        return [f"{WRONG_ENTRY} (got a JSON {type(predictions).__name__}, not a list)"]
    errors = []
    if n_pages is not None and len(predictions) != n_pages:
        errors.append(_length_error(len(predictions), n_pages))
    for i, entry in enumerate(predictions):
        errors.extend(_entry_errors(i, entry, strict))
    return errors


def write_output(output_dir: str | Path, predictions: list[dict[str, Any]], n_pages: int) -> Path:
    """Validate against the organizer's rules, then write atomically. Nothing is written if invalid."""
    errors = validation_errors(predictions, n_pages)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PredictionError(f"output rejected before writing: {errors[0]}{more}")
    return write_json_atomic(Path(output_dir) / OUTPUT_FILENAME, predictions)
