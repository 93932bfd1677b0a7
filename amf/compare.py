"""Compare an organizer output with a reference output, e.g. a GPU run with the CPU's.

    python3 amf/compare.py GOT.json EXPECTED.json (--card model.json | --threshold T)
                           [--tolerance 1e-3] [--margin 0.02] [--json]

Confidences must agree within ``tolerance`` on every page. Classes are compared only where the
reference (CPU) probability lies at least ``margin`` from the decision threshold: a GPU's
different summation order moves a probability by ~1e-6, enough to flip a page that sits on the
threshold, and such a flip says nothing about the container. The summary line says how many
pages were skipped. ``--margin 0`` compares every class (CPU against CPU).

Standard library only: test.sh runs it on the host with a plain ``python3``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOLERANCE = 1e-3
DEFAULT_MARGIN = 0.02


@dataclass
class Comparison:
    pages: int
    threshold: float
    tolerance: float
    margin: float
    skipped: list[int] = field(default_factory=list)  # classes not compared: reference near the threshold
    problems: list[str] = field(default_factory=list)
    class_mismatches: int = 0
    worst: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"pages": self.pages, "threshold": self.threshold, "margin": self.margin, "tolerance": self.tolerance,
                "max_abs_diff": self.worst, "skipped_near_threshold": len(self.skipped),
                "class_differences": self.class_mismatches, "ok": self.ok}

    def summary(self) -> str:
        compared = self.pages - len(self.skipped)
        near = (f"{len(self.skipped)} skipped within {self.margin:g} of threshold {self.threshold:.4f}"
                + (f": pages {', '.join(map(str, self.skipped[:10]))}{', ...' if len(self.skipped) > 10 else ''}"
                   if self.skipped else ""))
        classes = f"{self.class_mismatches} differ" if self.class_mismatches else "match"
        return (f"{self.pages} entries; classes {classes} on {compared} compared pages ({near}); "
                f"largest confidence difference {self.worst:.2e} (tolerance {self.tolerance:g})")


def compare(got: Any, expected: Any, threshold: float, *, tolerance: float = DEFAULT_TOLERANCE,
            margin: float = DEFAULT_MARGIN) -> Comparison:
    """Compare two organizer outputs page by page; ``expected`` is the reference (CPU) run."""
    result = Comparison(pages=len(expected) if isinstance(expected, list) else 0, threshold=float(threshold),
                        tolerance=float(tolerance), margin=float(margin))
    if not isinstance(got, list) or not isinstance(expected, list):
        result.problems.append("both outputs must be JSON lists of entries")
        return result
    if len(got) != len(expected):
        result.problems.append(f"{len(got)} entries, expected {len(expected)}")
        return result
    for i, (g, w) in enumerate(zip(got, expected, strict=True)):
        try:
            g_conf, w_conf = float(g["confidence"]), float(w["confidence"])
            g_class, w_class = g["class"], w["class"]
        except (TypeError, KeyError, ValueError):
            result.problems.append(f"page {i}: malformed entry (got {g!r}, expected {w!r})")
            continue
        diff = abs(g_conf - w_conf)
        if not math.isfinite(diff):
            result.problems.append(f"page {i}: confidence {g_conf} against {w_conf}")
            continue
        result.worst = max(result.worst, diff)
        if diff > tolerance:
            result.problems.append(f"page {i}: confidence {g_conf:.6f}, expected {w_conf:.6f} "
                                   f"(difference {diff:.2e} > {tolerance:g})")
        if abs(w_conf - threshold) < margin:
            result.skipped.append(i)
        elif g_class != w_class:
            result.class_mismatches += 1
            result.problems.append(f"page {i}: class {g_class!r}, expected {w_class!r} "
                                   f"(reference confidence {w_conf:.4f}, threshold {threshold:.4f})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare an organizer output with a reference (CPU) output.")
    parser.add_argument("got", help="the output to check (e.g. the GPU container's)")
    parser.add_argument("expected", help="the reference output (CPU)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--card", help="model.json whose threshold made the classes")
    source.add_argument("--threshold", type=float, help="the decision threshold")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest confidence difference (default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help=f"compare classes only where the reference lies this far from the threshold "
                             f"(default {DEFAULT_MARGIN:g}; 0 compares all)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    try:
        threshold = args.threshold
        if threshold is None:
            with open(args.card, encoding="utf-8") as fh:
                threshold = float(json.load(fh)["threshold"])
        with open(args.got, encoding="utf-8") as fh:
            got = json.load(fh)
        with open(args.expected, encoding="utf-8") as fh:
            expected = json.load(fh)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 2
    result = compare(got, expected, threshold, tolerance=args.tolerance, margin=args.margin)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    print(json.dumps(result.as_dict()) if args.json else result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
