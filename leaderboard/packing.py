"""``pack``: labelled patches from MIDOG25-style manifests -> organizer-style jobs, one per multi-page
stack, plus the organizer's ground truth."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amf import CLASS_NAMES
from amf.atomic import write_atomic, write_json_atomic
from amf.errors import InputError
from amf.manifest import cell, read_cases, read_rgb
from amf.organizer import SLUG
from leaderboard.layout import DOMAIN_NAMES_FILE, GROUND_TRUTH, METRICS, PACK, RUN, inputs_json, now

# The organizer's sample stack (stack_5.tiff) stores integer dots per inch, X and Y apart:
# 102351 and 101949 dpi, i.e. about 0.248 and 0.249 µm per pixel.
SAMPLE_DPI = (102351, 101949)
UNKNOWN = "unknown"  # the domain of cases with an empty domain cell, named as training names it


@dataclass
class Case:
    image_id: str
    path: Path
    label: int
    domain: str  # the name in the domain column (UNKNOWN when empty), numbered into tumordomains
    manifest: str


@dataclass
class Stack:
    name: str
    cases: list[Case] = field(default_factory=list)

    @property
    def image(self) -> str:
        return f"{self.name}.tiff"


def parse_where(items: Sequence[str]) -> dict[str, set[str]]:
    """``COLUMN=VALUE`` filters: values of one column are alternatives, columns must all match."""
    where: dict[str, set[str]] = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise InputError(f"--where {item!r} is not COLUMN=VALUE")
        where.setdefault(column.strip(), set()).add(value.strip())
    return where


def _matches(row: Mapping[str | None, object], where: dict[str, set[str]]) -> bool:
    return all(cell(row, col) in values for col, values in where.items())


def load_cases(manifests: Sequence[Path], images: Path | None, label_column: str, domain_column: str,
               where: dict[str, set[str]]) -> list[Case]:
    """Labelled cases of all manifests that pass the filters, in a stable order (read, labelled and checked by
    :func:`amf.manifest.read_cases`, as training reads them)."""
    cases: list[Case] = []
    seen: dict[Path, str] = {}
    values: dict[str, set[str]] = {col: set() for col in where}  # to say what the filters could match

    def keep(row: Mapping[str | None, object]) -> bool:
        for col in where:
            values[col].add(cell(row, col))
        return _matches(row, where)

    for manifest in manifests:
        for case in read_cases(manifest, images, label_column=label_column, columns=[domain_column, *where],
                               keep=keep):
            if case.path in seen:
                raise InputError(f"{case.path} is listed twice ({seen[case.path]} and {case.where})")
            seen[case.path] = case.where
            cases.append(Case(case.image_id, case.path, case.label, case.cell(domain_column) or UNKNOWN,
                              str(manifest)))
    if not cases:
        known = "; ".join(f"{col} has {', '.join(repr(v) for v in sorted(vals)[:12])}" for col, vals in values.items())
        raise InputError(f"no case passes the filters {dict(where) or ''} in {', '.join(map(str, manifests))}"
                         + (f" ({known})" if known else ""))
    return sorted(cases, key=lambda c: (c.manifest, c.image_id))


def _stratified_order(cases: list[Case], rng: np.random.Generator) -> list[Case]:
    """Cases ordered so that every window holds each (domain, class) in proportion.

    Each group is shuffled and its members get evenly spaced keys in (0, 1); sorting by key
    interleaves the groups. A random tie-break keeps equal keys from favouring one group.
    """
    groups: dict[tuple[str, int], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.domain, case.label), []).append(case)
    keyed = []
    for members in groups.values():
        order = rng.permutation(len(members))
        for j, k in enumerate(order):
            keyed.append(((j + 0.5) / len(members), rng.random(), members[k]))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [case for _, _, case in keyed]


def subsample(cases: list[Case], limit: int | None, rng: np.random.Generator) -> list[Case]:
    """At most ``limit`` cases, keeping the domain and class proportions."""
    if limit is None or limit >= len(cases):
        return cases
    return sorted(_stratified_order(cases, rng)[:limit], key=lambda c: (c.manifest, c.image_id))


def make_stacks(cases: list[Case], stack_size: int, rng: np.random.Generator) -> list[Stack]:
    """Stacks of ``stack_size`` (the last of a domain may be shorter), one domain per stack as in the
    organizer's ground truth, both classes in every stack where the counts allow; pages shuffled."""
    stacks: list[Stack] = []
    for domain in number_domains(cases):  # stacks in domain-number order
        ordered = _stratified_order([c for c in cases if c.domain == domain], rng)
        for start in range(0, len(ordered), stack_size):
            chunk = ordered[start : start + stack_size]
            pages = [chunk[k] for k in rng.permutation(len(chunk))]
            stacks.append(Stack(f"stack_{len(stacks) + 1}", pages))
    return stacks


def number_domains(cases: list[Case]) -> dict[str, int]:
    """Domain name -> number from 1, known names in sorted order, the unknown domain last."""
    names = sorted({c.domain for c in cases} - {UNKNOWN})
    if any(c.domain == UNKNOWN for c in cases):
        names.append(UNKNOWN)
    return {name: i for i, name in enumerate(names, start=1)}


def write_stack(path: Path, pages: Sequence[np.ndarray], dpi: tuple[int, int] = SAMPLE_DPI) -> Path:
    """A multi-page RGB TIFF written like the organizer's sample: classic little-endian TIFF,
    one Deflate-compressed strip per page, no predictor, integer DPI, no ImageDescription."""
    import tifffile

    options: dict[str, Any] = {
        "photometric": "rgb", "planarconfig": "contig", "compression": "adobe_deflate",
        "resolution": ((int(dpi[0]), 1), (int(dpi[1]), 1)), "resolutionunit": "INCH",
        "metadata": None, "software": False,
    }

    def write(tmp: Path) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=False, byteorder="<") as tw:
            for page in pages:
                tw.write(page, rowsperstrip=page.shape[0], **options)

    return write_atomic(path, write)


def ground_truth(stacks: list[Stack], domain_numbers: dict[str, int]) -> list[dict[str, Any]]:
    return [{
        "image": s.image,
        "labels": [CLASS_NAMES[c.label] for c in s.cases],
        "tumordomains": [domain_numbers[c.domain] for c in s.cases],
    } for s in stacks]


def _clear_pack(out: Path, force: bool) -> None:
    ours = [out / "jobs", out / GROUND_TRUTH, out / DOMAIN_NAMES_FILE, out / PACK, out / RUN, out / METRICS]
    present = [p for p in ours if p.exists()]
    if present and not force:
        raise InputError(f"{out} already holds a pack ({present[0].name}); pass --force to replace it")
    for p in present:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def pack(manifests: Sequence[Path], out: Path, *, images: Path | None = None, stack_size: int = 16,
         seed: int = 0, domain_column: str = "Tumor", label_column: str = "majority",
         where: Sequence[str] = (), limit: int | None = None, dpi: tuple[int, int] = SAMPLE_DPI,
         force: bool = False, log=print) -> dict[str, Any]:
    """Write organizer-style jobs and ground truth for the labelled patches of ``manifests``."""
    if stack_size < 1:
        raise InputError("--stack-size must be at least 1")
    rng = np.random.default_rng(seed)
    cases = subsample(load_cases(manifests, images, label_column, domain_column, parse_where(where)), limit, rng)
    stacks = make_stacks(cases, stack_size, rng)
    domain_numbers = number_domains(cases)
    _clear_pack(out, force)
    if UNKNOWN in domain_numbers:
        n_unknown = sum(c.domain == UNKNOWN for c in cases)
        log(f"note: {n_unknown} cases have an empty {domain_column} cell; they form domain "
            f"{domain_numbers[UNKNOWN]} {UNKNOWN!r} (metadata missing, not a {domain_column} value)")
    for stack in stacks:
        job = out / "jobs" / stack.name / "input"
        write_stack(job / "images" / SLUG / stack.image, [read_rgb(c.path) for c in stack.cases], dpi)
        write_json_atomic(job / "inputs.json", inputs_json(stack.image), indent=4)
    write_json_atomic(out / GROUND_TRUTH, ground_truth(stacks, domain_numbers))
    write_json_atomic(out / DOMAIN_NAMES_FILE, {"column": domain_column,
                                                "domains": {str(v): k for k, v in domain_numbers.items()},
                                                "unknown": domain_numbers.get(UNKNOWN)})
    summary = _pack_summary(cases, stacks, domain_numbers)
    write_json_atomic(out / PACK, {
        "created": now(), "manifests": [str(m) for m in manifests], "images": str(images) if images else None,
        "label_column": label_column, "domain_column": domain_column, "where": list(where), "limit": limit,
        "seed": seed, "stack_size": stack_size, "dpi": list(dpi), **summary,
        "jobs": [{"job": s.name, "image": s.image, "pages": [
            {"image_id": c.image_id, "manifest": c.manifest, "label": CLASS_NAMES[c.label],
             "domain": domain_numbers[c.domain]} for c in s.cases]} for s in stacks],
    })
    return summary


def _pack_summary(cases: list[Case], stacks: list[Stack], domain_numbers: dict[str, int]) -> dict[str, Any]:
    per_domain = {str(n): {"name": name, "cases": sum(c.domain == name for c in cases),
                           "atypical": sum(c.domain == name and c.label == 1 for c in cases)}
                  for name, n in domain_numbers.items()}
    mixed = sum(len({c.label for c in s.cases}) == 2 for s in stacks)
    return {"n_cases": len(cases), "n_atypical": sum(c.label for c in cases), "n_stacks": len(stacks),
            "n_mixed_stacks": mixed, "per_domain": per_domain}
