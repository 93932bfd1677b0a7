"""Score like the organizers, locally: pack a labelled set into Grand Challenge jobs, run the
algorithm once per job as the platform does, and evaluate with the organizer's rules.

    python -m amf.leaderboard pack MANIFEST.csv --out lb --where Scanner="Hamamatsu XR"
    python -m amf.leaderboard run lb --model model
    python -m amf.leaderboard evaluate lb

Layout (one folder per job, as the organizer's evaluation container sees them)::

    OUT/ground_truth.json       organizer format: [{"image", "labels", "tumordomains"}]
    OUT/domains.json            domain number -> name, and the metadata column they came from
    OUT/pack.json               how the pack was made; which patch is on which page
    OUT/jobs/<job>/input/       inputs.json + images/stacked-histopathology-roi-cropouts/<job>.tiff
    OUT/jobs/<job>/output/      multiple-mitotic-figure-classification.json (written by ``run``)
    OUT/jobs/predictions.json   Grand Challenge job list: OUT/jobs can be mounted as the official
                                evaluation container's /input
    OUT/run.json                per-job status and wall time
    OUT/metrics.json, *.png     written by ``evaluate``
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amf import CLASS_NAMES
from amf.atomic import write_atomic, write_json_atomic
from amf.errors import AmfError, InputError, PredictionError
from amf.metrics import METRIC_NAMES, domain_metrics, roc_curve
from amf.organizer import OUTPUT_FILENAME, SLUG, score_of, validation_errors

GROUND_TRUTH = "ground_truth.json"
DOMAINS = "domains.json"
PACK = "pack.json"
RUN = "run.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.json"
OUTPUT_SLUG = "multiple-mitotic-figure-classification"
# The organizer's sample stack (stack_5.tiff) stores integer dots per inch, X and Y apart:
# 102351 and 101949 dpi, i.e. about 0.248 and 0.249 µm per pixel.
SAMPLE_DPI = (102351, 101949)
UNKNOWN = "unknown"  # the domain of cases with an empty domain cell, named as training names it
LABELS = {"amf": 1, "atypical": 1, "1": 1, "nmf": 0, "normal": 0, "0": 0}
REPO = Path(__file__).resolve().parents[1]
# {repo}/process.py rather than process.py, so `run` works from any working directory
DEFAULT_COMMAND = "{python} {repo}/process.py --input {input} --output {output} --model {model}"
TAIL_LINES = 20
BYTES_PER_JOB = 1.5 * 2**30  # a process.py job: Python, torch and one small CNN, with margin


class JobsFailed(AmfError):
    """At least one algorithm job failed or wrote an output the organizer would reject."""

    exit_code = 5


class OutputsRejected(PredictionError):
    """The organizer's evaluation would reject these outputs."""


class NotScorable(AmfError):
    """The outputs are valid but the organizer's evaluation would abort on this ground truth."""

    exit_code = 6


# ----------------------------------------------------------------------------------------- pack


@dataclass
class Case:
    image_id: str
    path: Path
    label: int
    domain: str
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


def _read_manifest(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return rows, list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read manifest {path}: {err}") from err


def _check_columns(path: Path, columns: list[str], needed: Iterable[str]) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InputError(f"{path} has no column {', '.join(map(repr, missing))}; it has {', '.join(columns)}")


def _label_of(value: str, where: str) -> int:
    label = LABELS.get(value.strip().lower())
    if label is None:
        raise InputError(f"{where}: label {value!r} is neither AMF/atypical nor NMF/normal")
    return label


def _matches(row: dict[str, str], where: dict[str, set[str]]) -> bool:
    return all((row.get(col) or "").strip() in values for col, values in where.items())


def load_cases(manifests: Sequence[Path], images: Path | None, label_column: str, domain_column: str,
               where: dict[str, set[str]]) -> list[Case]:
    """Labelled cases of all manifests that pass the filters, in a stable order."""
    cases: list[Case] = []
    seen: dict[Path, str] = {}
    values: dict[str, set[str]] = {col: set() for col in where}  # to say what the filters could match
    for manifest in manifests:
        rows, columns = _read_manifest(manifest)
        _check_columns(manifest, columns, ["image_id", label_column, domain_column, *where])
        folder = images if images is not None else manifest.parent / "images"
        for i, row in enumerate(rows, start=2):  # line 1 is the header
            for col in where:
                values[col].add((row[col] or "").strip())
            if not _matches(row, where):
                continue
            path = folder / row["image_id"]
            if path in seen:
                raise InputError(f"{path} is listed twice ({seen[path]} and {manifest} line {i})")
            seen[path] = f"{manifest} line {i}"
            domain = (row[domain_column] or "").strip() or UNKNOWN
            label = _label_of(row[label_column] or "", f"{manifest} line {i}")
            cases.append(Case(row["image_id"], path, label, domain, str(manifest)))
    if not cases:
        known = "; ".join(f"{col} has {', '.join(repr(v) for v in sorted(vals)[:12])}" for col, vals in values.items())
        raise InputError(f"no case passes the filters {dict(where) or ''} in {', '.join(map(str, manifests))}"
                         + (f" ({known})" if known else ""))
    missing = [c.path for c in cases if not c.path.is_file()]
    if missing:
        raise InputError(f"{len(missing)} patch files are missing, e.g. {missing[0]}")
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


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image  # pillow is only needed to pack

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as err:
        raise InputError(f"cannot read patch {path}: {err}") from err


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


def ground_truth(stacks: list[Stack], numbers: dict[str, int]) -> list[dict[str, Any]]:
    return [{
        "image": s.image,
        "labels": [CLASS_NAMES[c.label] for c in s.cases],
        "tumordomains": [numbers[c.domain] for c in s.cases],
    } for s in stacks]


def _clear_pack(out: Path, force: bool) -> None:
    ours = [out / "jobs", out / GROUND_TRUTH, out / DOMAINS, out / PACK, out / RUN, out / METRICS]
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
    numbers = number_domains(cases)
    _clear_pack(out, force)
    if UNKNOWN in numbers:
        n_unknown = sum(c.domain == UNKNOWN for c in cases)
        log(f"note: {n_unknown} cases have an empty {domain_column} cell; they form domain {numbers[UNKNOWN]} "
            f"{UNKNOWN!r} (metadata missing, not a {domain_column} value)")
    for stack in stacks:
        job = out / "jobs" / stack.name / "input"
        write_stack(job / "images" / SLUG / stack.image, [_read_rgb(c.path) for c in stack.cases], dpi)
        write_json_atomic(job / "inputs.json", inputs_json(stack.image), indent=4)
    write_json_atomic(out / GROUND_TRUTH, ground_truth(stacks, numbers))
    write_json_atomic(out / DOMAINS, {"column": domain_column, "domains": {str(v): k for k, v in numbers.items()},
                                      "unknown": numbers.get(UNKNOWN)})
    summary = _pack_summary(cases, stacks, numbers)
    write_json_atomic(out / PACK, {
        "created": _now(), "manifests": [str(m) for m in manifests], "images": str(images) if images else None,
        "label_column": label_column, "domain_column": domain_column, "where": list(where), "limit": limit,
        "seed": seed, "stack_size": stack_size, "dpi": list(dpi), **summary,
        "jobs": [{"job": s.name, "image": s.image, "pages": [
            {"image_id": c.image_id, "manifest": c.manifest, "label": CLASS_NAMES[c.label], "domain": numbers[c.domain]}
            for c in s.cases]} for s in stacks],
    })
    return summary


def _pack_summary(cases: list[Case], stacks: list[Stack], numbers: dict[str, int]) -> dict[str, Any]:
    per_domain = {str(n): {"name": name, "cases": sum(c.domain == name for c in cases),
                           "atypical": sum(c.domain == name and c.label == 1 for c in cases)}
                  for name, n in numbers.items()}
    mixed = sum(len({c.label for c in s.cases}) == 2 for s in stacks)
    return {"n_cases": len(cases), "n_atypical": sum(c.label for c in cases), "n_stacks": len(stacks),
            "n_mixed_stacks": mixed, "per_domain": per_domain}


# ------------------------------------------------------------------------------------------ run


@dataclass
class Job:
    name: str
    image: str
    input: Path
    output: Path
    n_pages: int


@dataclass
class JobResult:
    job: str
    image: str
    status: str  # ok | failed | timeout | no output | invalid
    returncode: int | None
    wall_s: float
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stderr_tail: str = ""


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _image_of(input_dir: Path) -> str:
    try:
        entries = json.loads((input_dir / "inputs.json").read_text(encoding="utf-8"))
        return next(e["image"]["name"] for e in entries if e["interface"]["slug"] == SLUG)
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as err:
        raise InputError(f"{input_dir / 'inputs.json'} names no {SLUG} image: {err}") from err


def _page_count(path: Path) -> int:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return len(tif.pages)


def discover_jobs(pack_dir: Path, out: Path) -> list[Job]:
    inputs = sorted((pack_dir / "jobs").glob("*/input/inputs.json"), key=lambda p: _natural_key(p.parent.parent.name))
    if not inputs:
        raise InputError(f"no jobs under {pack_dir / 'jobs'}; run `python -m amf.leaderboard pack` first")
    jobs = []
    for path in inputs:
        name, input_dir = path.parent.parent.name, path.parent
        image = _image_of(input_dir)
        jobs.append(Job(name, image, input_dir.resolve(), (out / "jobs" / name / "output").resolve(),
                        _page_count(input_dir / "images" / SLUG / image)))
    return jobs


def available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_jobs() -> int:
    """As many parallel jobs as there are CPUs, fewer if memory would not hold them."""
    memory = available_memory()
    by_memory = int(memory // BYTES_PER_JOB) if memory else usable_cpus()
    return max(1, min(usable_cpus(), by_memory))


def process_command(template: str, job: Job, model: Path) -> list[str]:
    fields = {"python": sys.executable, "repo": str(REPO), "input": str(job.input), "output": str(job.output),
              "model": str(model), "job": job.name}
    try:
        return [token.format(**fields) for token in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(f"--command {template!r}: unknown or malformed placeholder {err}; "
                         f"use {{{'}, {'.join(fields)}}}") from err


def container_command(engine: str, image: str, job: Job, threads: int, extra: Sequence[str]) -> list[str]:
    """One fresh container per job, as on the platform: no network, read-only input."""
    return [engine, "run", "--rm", "--name", container_name(job), "--network", "none",
            "-v", f"{job.input}:/input:ro", "-v", f"{job.output}:/output",
            "-e", f"OMP_NUM_THREADS={threads}", *extra, image]


def container_name(job: Job) -> str:
    return f"amf-lb-{os.getpid()}-{job.name}"


def container_engine(requested: str | None) -> str:
    for engine in [requested] if requested else ["docker", "podman"]:
        if shutil.which(engine):
            return engine
    raise InputError(f"no container engine found ({requested or 'docker or podman'})")


def thread_env(threads: int) -> dict[str, str]:
    """Caps each job's math threads so parallel jobs share the CPUs instead of fighting over them."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, str(threads))
    return env


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class LiveJobs:
    """The running job processes, so an interrupted ``run`` can stop them (they run in their own
    sessions, which keeps a Ctrl-C from reaching them directly)."""

    def __init__(self) -> None:
        self._procs: dict[int, tuple[subprocess.Popen, Job, str | None]] = {}
        self._lock = threading.Lock()
        self.stopping = False

    def add(self, proc: subprocess.Popen, job: Job, engine: str | None) -> None:
        with self._lock:
            self._procs[proc.pid] = (proc, job, engine)
            late = self.stopping  # started while the run was being stopped
        if late:
            _kill(proc, job, engine)

    def remove(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.pop(proc.pid, None)

    def kill_all(self) -> None:
        with self._lock:
            self.stopping = True
            procs = list(self._procs.values())
        for proc, job, engine in procs:
            _kill(proc, job, engine)


def _kill(proc: subprocess.Popen, job: Job, engine: str | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if engine:  # the CLI's death does not stop the container
        subprocess.run([engine, "rm", "-f", container_name(job)], capture_output=True, check=False)
    proc.wait()


def check_output(job: Job) -> tuple[str, list[str], list[str]]:
    """Status, organizer rejections and stricter warnings for a finished job's output file."""
    path = job.output / OUTPUT_FILENAME
    if not path.is_file():
        return "no output", [f"{OUTPUT_FILENAME} was not written"], []
    try:
        predictions = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return "invalid", [f"{OUTPUT_FILENAME} is not JSON: {err}"], []
    errors = validation_errors(predictions, job.n_pages, strict=False)
    warnings = [] if errors else validation_errors(predictions, job.n_pages, strict=True)
    return ("invalid" if errors else "ok"), errors, warnings


def run_job(job: Job, command: list[str], env: dict[str, str], timeout: float | None, logs: Path,
            engine: str | None = None, live: LiveJobs | None = None) -> JobResult:
    live = live or LiveJobs()
    if live.stopping:
        return JobResult(job.name, job.image, "failed", None, 0.0, ["not started: the run was interrupted"])
    shutil.rmtree(job.output, ignore_errors=True)
    job.output.mkdir(parents=True)
    if engine:
        job.output.chmod(0o777)  # the container's user is not ours
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(logs / "stdout.txt", "wb") as out, open(logs / "stderr.txt", "wb") as err:
        try:
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, start_new_session=True)
        except OSError as e:
            return JobResult(job.name, job.image, "failed", None, 0.0, [f"cannot start {command[0]}: {e}"])
        live.add(proc, job, engine)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc, job, engine)
            wall = time.perf_counter() - start
            return JobResult(job.name, job.image, "timeout", None, wall, [f"killed after {timeout:g} s"],
                             stderr_tail=_tail(logs / "stderr.txt"))
        finally:
            live.remove(proc)
    wall = time.perf_counter() - start
    if rc != 0:
        return JobResult(job.name, job.image, "failed", rc, wall, [f"exit code {rc}"],
                         stderr_tail=_tail(logs / "stderr.txt"))
    status, errors, warnings = check_output(job)
    tail = _tail(logs / "stderr.txt") if errors else ""
    return JobResult(job.name, job.image, status, rc, wall, errors, warnings, tail)


def grand_challenge_predictions(results: list[JobResult]) -> list[dict[str, Any]]:
    """The job list the organizer's evaluation reads, pk = job folder name."""
    return [{
        "pk": r.job,
        "inputs": inputs_json(r.image),
        "outputs": [{"file": None, "image": None, "value": None, "interface": {
            "slug": OUTPUT_SLUG, "kind": "Anything", "super_kind": "File",
            "relative_path": OUTPUT_FILENAME, "example_value": None}}],
        "status": "Succeeded" if r.status in ("ok", "invalid") else "Failed",
    } for r in results]


def machine() -> dict[str, Any]:
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"node": platform.node(), "cpus": usable_cpus(), "memory_gib": round(memory / 2**30, 1) if memory else None,
            "python": platform.python_version()}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run(pack_dir: Path, *, out: Path | None = None, command: str = DEFAULT_COMMAND, model: Path = Path("model"),
        container: str | None = None, engine: str | None = None, container_args: Sequence[str] = (),
        jobs: int | None = None, timeout: float | None = None, progress: bool | None = None,
        log=print) -> dict[str, Any]:
    """Run the algorithm once per job; write ``run.json``; raise :class:`JobsFailed` if any job failed."""
    from tqdm import tqdm

    out = out or pack_dir
    todo = discover_jobs(pack_dir, out)
    n_parallel = max(1, min(jobs or default_jobs(), len(todo)))
    threads = max(1, usable_cpus() // n_parallel)
    env = thread_env(threads)
    engine_name = container_engine(engine) if container else None
    if not container and "{model}" in command and not model.is_dir():
        raise InputError(f"model directory {model} does not exist; pass --model DIR (a training run's <out>/model)")
    live = LiveJobs()

    def launch(job: Job) -> JobResult:
        cmd = (container_command(engine_name, container, job, threads, container_args) if container and engine_name
               else process_command(command, job, model.resolve()))
        return run_job(job, cmd, env, timeout, out / "jobs" / job.name / "log", engine_name, live)

    started, t0 = _now(), time.perf_counter()
    results: list[JobResult] = []
    bar = tqdm(total=len(todo), unit="job", desc="run", file=sys.stderr, disable=True if progress is False else None)
    with ThreadPoolExecutor(n_parallel) as pool, bar:
        futures = [pool.submit(launch, job) for job in todo]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(1)
                bar.set_postfix(failed=sum(r.status != "ok" for r in results))
        except BaseException:  # Ctrl-C: stop what runs, start nothing new
            live.kill_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    results.sort(key=lambda r: _natural_key(r.job))
    report = _run_report(pack_dir, out, results, started, time.perf_counter() - t0, n_parallel, threads,
                         container or command, model)
    write_json_atomic(out / "jobs" / PREDICTIONS, grand_challenge_predictions(results), indent=4)
    write_json_atomic(out / RUN, report)
    _raise_on_failures(results, out, log)
    return report


def _run_report(pack_dir: Path, out: Path, results: list[JobResult], started: str, wall: float, n_parallel: int,
                threads: int, command: str, model: Path) -> dict[str, Any]:
    walls = [r.wall_s for r in results]
    return {
        "pack": str(pack_dir.resolve()), "out": str(out.resolve()), "command": command, "model": str(model),
        "started": started, "wall_s": round(wall, 3), "parallel_jobs": n_parallel, "threads_per_job": threads,
        "machine": machine(), "n_jobs": len(results), "n_failed": sum(r.status != "ok" for r in results),
        "job_wall_s": {"median": round(float(np.median(walls)), 3), "max": round(max(walls), 3)} if walls else None,
        "jobs": [{"job": r.job, "image": r.image, "status": r.status, "returncode": r.returncode,
                  "wall_s": round(r.wall_s, 3), "output": f"jobs/{r.job}/output/{OUTPUT_FILENAME}",
                  "errors": r.errors, "warnings": r.warnings, "stderr_tail": r.stderr_tail} for r in results],
    }


def _raise_on_failures(results: list[JobResult], out: Path, log) -> None:
    for r in results:
        for w in r.warnings[:3]:
            log(f"warning: {r.job}: {w}")
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        log(f"{r.job} ({r.image}): {r.status}: {'; '.join(r.errors[:3])}", file=sys.stderr)
        if r.stderr_tail:
            log("    " + r.stderr_tail.replace("\n", "\n    "), file=sys.stderr)
    if failed:
        raise JobsFailed(f"{len(failed)} of {len(results)} jobs failed; details in {out / RUN} and "
                         f"{out / 'jobs'}/<job>/log/")


# ------------------------------------------------------------------------------------- evaluate


@dataclass
class Scored:
    y_true: np.ndarray
    y_pred: np.ndarray
    y_score: np.ndarray
    domains: np.ndarray
    n_jobs: int
    warnings: list[str]


def load_ground_truth(path: Path) -> dict[str, tuple[list[int], list[Any]]]:
    """image -> (labels as 0/1, tumour domains), after checking the organizer's format."""
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read ground truth {path}: {err}") from err
    if not isinstance(truth, list):
        raise InputError(f"{path}: the ground truth must be a list of {{image, labels, tumordomains}}")
    table: dict[str, tuple[list[int], list[Any]]] = {}
    for i, item in enumerate(truth):
        where = f"{path} entry {i}"
        if not isinstance(item, dict) or not {"image", "labels", "tumordomains"} <= item.keys():
            raise InputError(f"{where} lacks image, labels or tumordomains")
        labels, domains = item["labels"], item["tumordomains"]
        if not isinstance(labels, list) or not isinstance(domains, list) or len(labels) != len(domains):
            raise InputError(f"{where}: labels and tumordomains must be lists of one length")
        bad = [v for v in labels if v not in CLASS_NAMES]
        if bad:
            raise InputError(f"{where}: label {bad[0]!r} is not one of {', '.join(CLASS_NAMES)}")
        if item["image"] in table:
            raise InputError(f"{where}: image {item['image']!r} appears twice")
        table[item["image"]] = ([CLASS_NAMES.index(v) for v in labels], domains)
    return table


def _gc_jobs(predictions: Any, jobs_dir: Path) -> list[tuple[str, str | None, Path]]:
    """(pk, input image name, output file) per job, read the way the organizer reads predictions.json."""
    found = []
    for job in predictions:
        image = next((v["image"]["name"] for v in job["inputs"] if v["interface"]["slug"] == SLUG), None)
        rel = next((v["interface"]["relative_path"] for v in job["outputs"] if v["interface"]["slug"] == OUTPUT_SLUG),
                   OUTPUT_FILENAME)
        found.append((str(job["pk"]), image, jobs_dir / str(job["pk"]) / "output" / rel))
    return found


def find_outputs(run_dir: Path, pack_dir: Path) -> list[tuple[str, str | None, Path]]:
    """Every job's (name, image, output path): from predictions.json when ``run`` wrote one."""
    listing = run_dir / "jobs" / PREDICTIONS
    if listing.is_file():
        try:
            return _gc_jobs(json.loads(listing.read_text(encoding="utf-8")), run_dir / "jobs")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"cannot read {listing}: {err}") from err
    found = []
    for inputs in sorted((pack_dir / "jobs").glob("*/input/inputs.json"), key=lambda p: _natural_key(str(p))):
        name = inputs.parent.parent.name
        found.append((name, _image_of(inputs.parent), run_dir / "jobs" / name / "output" / OUTPUT_FILENAME))
    return found


def _read_output(path: Path) -> tuple[Any, str | None]:
    if not path.is_file():
        return None, "no output file: the job failed, and on the platform a failed job fails the submission"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"output is not JSON: {err}"


def collect(run_dir: Path, pack_dir: Path, truth: dict[str, tuple[list[int], list[Any]]],
            allow_missing: bool = False) -> Scored:
    """Match jobs to the ground truth by input image name and check every output as the organizer does."""
    y_true: list[int] = []
    y_pred: list[int] = []
    y_score: list[float] = []
    domains: list[Any] = []
    rejected: list[str] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    missing: list[str] = []
    jobs = find_outputs(run_dir, pack_dir)
    for name, image, path in jobs:
        if image not in truth:
            rejected.append(f"{name}: No GT for this image: {image}")
            continue
        output, problem = _read_output(path)
        if problem and allow_missing and not path.exists():
            missing.append(name)
            continue
        if problem:
            rejected.append(f"{name}: {problem}")
            continue
        if image in seen:
            warnings.append(f"{name} and {seen[image]} both ran on {image}; the organizer counts it twice, so do we")
        seen[image] = name
        labels, doms = truth[image]
        errors = validation_errors(output, len(labels), strict=False)
        if errors:
            rejected.extend(f"{name}: {e}" for e in errors[:5])
            continue
        warnings.extend(f"{name}: {w}" for w in validation_errors(output, len(labels), strict=True)[:3])
        y_true += labels
        domains += doms
        y_pred += [CLASS_NAMES.index(e["class"]) for e in output]
        y_score += [score_of(e) for e in output]
    if rejected:
        raise OutputsRejected(f"the organizer's evaluation would fail on {len(rejected)} problem(s): "
                              + " | ".join(rejected[:10]) + (" | ..." if len(rejected) > 10 else ""))
    unrun = sorted(set(truth) - set(seen), key=_natural_key)
    if unrun:
        shown = ", ".join(unrun[:5]) + (", ..." if len(unrun) > 5 else "")
        note = f"{len(unrun)} ground-truth stacks have no job output ({shown})"
        if not allow_missing:
            raise OutputsRejected(note + "; the platform runs every stack (pass --allow-missing to score the rest)")
        warnings.append(note + "; scored without them")
    if not y_true:
        raise OutputsRejected(f"no job outputs to score in {run_dir / 'jobs'}")
    return Scored(np.array(y_true), np.array(y_pred), np.array(y_score, dtype=np.float64),
                  np.array(domains), len(jobs), warnings)


def organizer_aggregates(result: dict[str, Any]) -> dict[str, Any]:
    """The organizer's metrics.json "aggregates" block, key for key."""
    overall = result["overall"]
    agg: dict[str, Any] = {f"overall_{k}": overall[k] for k in
                           ("sensitivity", "specificity", "balanced_accuracy", "roc_auc", "accuracy")}
    for key, m in result.get("per_domain", {}).items():
        agg[f"domain_{key}"] = {k: m[k] for k in ("sensitivity", "specificity", "balanced_accuracy", "accuracy",
                                                   "roc_auc")}
    return agg


def _json_safe(obj: Any) -> Any:
    """NaN as null: the organizer writes bare NaN, which strict JSON readers refuse."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _fmt(v: float) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"


def metrics_table(result: dict[str, Any], names: dict[str, str]) -> str:
    short = {"balanced_accuracy": "bal.acc", "sensitivity": "sens", "specificity": "spec",
             "accuracy": "acc", "roc_auc": "AUC"}
    head = f"{'domain':<36} {'n':>6} {'atyp':>5} " + " ".join(f"{short[k]:>7}" for k in METRIC_NAMES)
    rows = [head, "-" * len(head)]

    def row(label: str, m: dict[str, Any]) -> str:
        cells = " ".join(f"{_fmt(m[k]):>7}" for k in METRIC_NAMES)
        return f"{label[:36]:<36} {m['n']:>6} {m['n_atypical']:>5} {cells}"

    rows.append(row("overall", result["overall"]))
    for key, m in result.get("per_domain", {}).items():
        rows.append(row(f"{key}: {names.get(key, '?')}", m))
    return "\n".join(rows)


def _load_domain_names(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    try:
        return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8"))["domains"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"cannot read domain names from {path}: {err}") from err


def _pack_of(run_dir: Path) -> Path:
    report = run_dir / RUN
    if report.is_file():
        try:
            return Path(json.loads(report.read_text(encoding="utf-8"))["pack"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"cannot read {report}: {err}") from err
    return run_dir


def evaluate(run_dir: Path, *, ground_truth_path: Path | None = None, domains_path: Path | None = None,
             out: Path | None = None, plots: bool = True, allow_missing: bool = False,
             log=print) -> dict[str, Any]:
    """The organizer's metrics for a run's outputs; writes metrics.json and plots into ``out``."""
    pack_dir = _pack_of(run_dir)
    gt_path = ground_truth_path or pack_dir / GROUND_TRUTH
    names = _load_domain_names(domains_path or gt_path.parent / DOMAINS)
    scored = collect(run_dir, pack_dir, load_ground_truth(gt_path), allow_missing)
    result = domain_metrics(scored.y_true, scored.y_score, scored.domains.tolist(), y_pred=scored.y_pred)
    result.pop("threshold")  # the classes come from the outputs, not from a threshold here
    for key, m in result["per_domain"].items():
        m["name"] = names.get(key, key)
    report = {
        "aggregates": organizer_aggregates(result), "overall": result["overall"], "per_domain": result["per_domain"],
        "organizer_errors": result["organizer_errors"], "warnings": scored.warnings, "n_jobs": scored.n_jobs,
        "n_pages": len(scored.y_true), "ground_truth": str(gt_path), "run": str(run_dir), "created": _now(),
    }
    out = out or run_dir
    write_json_atomic(out / METRICS, _json_safe(report))
    log(metrics_table(result, names))
    for w in scored.warnings:
        log(f"warning: {w}")
    if plots:
        paths = write_plots(out, scored, result, names)
        log("plots: " + ", ".join(str(p) for p in paths))
    if result["organizer_errors"]:
        raise NotScorable("; ".join(result["organizer_errors"]) + f" (metrics written to {out / METRICS} anyway)")
    return report


# ---------------------------------------------------------------------------------------- plots


def _figure(size: tuple[float, float] = (6.0, 5.0)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=size)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def plot_roc(path: Path, scored: Scored, result: dict[str, Any], names: dict[str, str]) -> Path:
    plt, fig, ax = _figure()
    keys = [str(d) for d in scored.domains]
    curves = [("overall", np.ones(len(keys), bool), result["overall"]["roc_auc"], 2.5)]
    curves += [(f"{k}: {names.get(k, k)}", np.array(keys) == k, m["roc_auc"], 1.2)
               for k, m in result["per_domain"].items()]
    for label, mask, auc, width in curves:
        if math.isnan(auc):
            continue  # one class: no curve
        fpr, tpr, _ = roc_curve(scored.y_true[mask], scored.y_score[mask])
        ax.plot(fpr, tpr, lw=width, label=f"{label[:30]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, atypical = positive", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


def plot_domains(path: Path, result: dict[str, Any], names: dict[str, str]) -> Path:
    groups = [("overall", result["overall"])] + [(f"{k}: {names.get(k, k)}"[:30], m)
                                                 for k, m in result["per_domain"].items()]
    plt, fig, ax = _figure((max(6.0, 1.6 * len(groups) + 2), 4.5))
    metrics = ("balanced_accuracy", "sensitivity", "specificity", "roc_auc")
    width = 0.8 / len(metrics)
    x = np.arange(len(groups))
    for i, name in enumerate(metrics):
        values = [m[name] for _, m in groups]
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, np.nan_to_num(values, nan=0.0), width, label=name)
    ax.set_xticks(x, [g for g, _ in groups], rotation=15, ha="right", fontsize=8)
    ax.set(ylim=(0, 1), ylabel="score", title="Per-domain metrics (n/a drawn as 0)")
    ax.legend(fontsize=8, ncols=2)
    return _save(plt, fig, path)


def plot_confusion(path: Path, overall: dict[str, Any]) -> Path:
    plt, fig, ax = _figure((4.5, 4.0))
    counts = np.array([[overall["tn"], overall["fp"]], [overall["fn"], overall["tp"]]])
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), c in np.ndenumerate(counts):
        ax.text(j, i, f"{c}\n{share[i, j]:.1%}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "k")
    ax.set_xticks([0, 1], [f"pred {n}" for n in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {n}" for n in CLASS_NAMES])
    ax.set_title("Confusion matrix (row-normalised)")
    return _save(plt, fig, path)


def write_plots(out: Path, scored: Scored, result: dict[str, Any], names: dict[str, str]) -> list[Path]:
    return [plot_roc(out / "roc.png", scored, result, names), plot_domains(out / "domains.png", result, names),
            plot_confusion(out / "confusion.png", result["overall"])]


# ------------------------------------------------------------------------------------------ cli


def _dpi(text: str) -> tuple[int, int]:
    parts = [round(float(v)) for v in text.split(",")]
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise argparse.ArgumentTypeError("--dpi takes X or X,Y, positive")
    return (parts[0], parts[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m amf.leaderboard",
        description="Score a model like the MIDOG 2025 Track 2 organizers, locally: pack labelled patches into "
                    "Grand Challenge jobs, run the algorithm once per job, evaluate with the organizer's rules.")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("pack", help="manifest(s) + patches -> organizer-style jobs and ground_truth.json",
                       description="Pack labelled patches into multi-page TIFF stacks (one job each) and the "
                                   "organizer's ground_truth.json.")
    p.add_argument("manifests", nargs="+", type=Path, help="CSV(s) in the MIDOG25 columns (image_id, labels, metadata)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the pack into")
    p.add_argument("--images", type=Path, help="patch folder (default: <manifest dir>/images for each manifest)")
    p.add_argument("--label-column", default="majority", help="label column, AMF/NMF (default: majority)")
    p.add_argument("--domain-column", default="Tumor",
                   help="metadata column numbered into tumordomains (default: Tumor); empty cells form a "
                        "separate 'unknown' domain, numbered last")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only matching rows; repeat (same column: any value, different columns: all). "
                        "COLUMN= matches empty cells")
    p.add_argument("--stack-size", type=int, default=16, help="patches per stack (default: 16, as the organizers)")
    p.add_argument("--limit", type=int, help="pack at most N patches, keeping domain and class proportions")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed; same inputs + seed = same pack (default: 0)")
    p.add_argument("--dpi", type=_dpi, default=SAMPLE_DPI, help="TIFF resolution X[,Y] in dots per inch "
                   f"(default: {SAMPLE_DPI[0]},{SAMPLE_DPI[1]}, as the organizer's sample stack)")
    p.add_argument("--force", action="store_true", help="replace a pack already in --out")

    r = sub.add_parser("run", help="run the algorithm once per job, as the platform does",
                       description="Run the algorithm once per stack in a fresh process or container, each "
                                   "with its own input and output folder; record status and wall time in run.json.")
    r.add_argument("pack", type=Path, help="folder written by `pack`")
    r.add_argument("--out", type=Path, help="where outputs and run.json go (default: the pack folder)")
    r.add_argument("--model", type=Path, default=Path("model"), help="model directory for {model} (default: model)")
    r.add_argument("--command", default=DEFAULT_COMMAND,
                   help="job command template, split like a shell line; placeholders {python} {repo} {input} {output} "
                        "{model} {job} "
                        f"(default: {DEFAULT_COMMAND!r})")
    r.add_argument("--container", metavar="IMAGE", help="run this container image per job instead "
                   "(--network none, /input read-only, /output writable)")
    r.add_argument("--engine", choices=("docker", "podman"), help="container engine (default: docker, else podman)")
    r.add_argument("--container-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `<engine> run`, e.g. --container-arg=--gpus=all; repeatable")
    r.add_argument("--jobs", "-j", type=int, help=f"parallel jobs (default here: {default_jobs()}, from CPUs "
                   "and free memory)")
    r.add_argument("--timeout", type=float, help="seconds before a job is killed (default: none)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="the organizer's metrics from the jobs' outputs",
                       description="Check every output as the organizer's evaluator does and compute balanced "
                                   "accuracy, sensitivity, specificity, accuracy and ROC AUC, overall and per domain.")
    e.add_argument("run", type=Path, help="folder with run.json and jobs/<job>/output (the pack or run --out)")
    e.add_argument("--ground-truth", type=Path, help="ground_truth.json (default: the pack's)")
    e.add_argument("--domains", type=Path, help="domains.json with domain names (default: beside the ground truth)")
    e.add_argument("--out", type=Path, help="where metrics.json and plots go (default: the run folder)")
    e.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    e.add_argument("--allow-missing", action="store_true", help="score the stacks that have outputs, "
                   "skipping jobs without any (the platform would fail the submission)")
    return parser


def _log(*args: Any, file=None) -> None:
    print(*args, file=file or sys.stdout, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "pack":
            summary = pack(args.manifests, args.out, images=args.images, stack_size=args.stack_size, seed=args.seed,
                           domain_column=args.domain_column, label_column=args.label_column, where=args.where,
                           limit=args.limit, dpi=args.dpi, force=args.force, log=_log)
            _log(f"packed {summary['n_cases']} patches ({summary['n_atypical']} atypical) into {summary['n_stacks']} "
                 f"stacks ({summary['n_mixed_stacks']} with both classes) in {args.out}")
            for number, d in summary["per_domain"].items():
                _log(f"  domain {number}: {d['name']}: {d['cases']} patches, {d['atypical']} atypical")
        elif args.verb == "run":
            report = run(args.pack, out=args.out, command=args.command, model=args.model, container=args.container,
                         engine=args.engine, container_args=args.container_arg, jobs=args.jobs, timeout=args.timeout,
                         progress=False if args.no_progress else None, log=_log)
            _log(f"{report['n_jobs']} jobs ok in {report['wall_s']:.1f} s ({report['parallel_jobs']} in parallel); "
                 f"{(args.out or args.pack) / RUN}")
        else:
            evaluate(args.run, ground_truth_path=args.ground_truth, domains_path=args.domains, out=args.out,
                     plots=not args.no_plots, allow_missing=args.allow_missing, log=_log)
    except AmfError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; running jobs were stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
