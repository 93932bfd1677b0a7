"""``run``: the algorithm once per job, as the platform runs it: a fresh process or container per
stack, its own input and output folder, several jobs in parallel."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amf.atomic import write_json_atomic
from amf.errors import AmfError, InputError
from amf.organizer import OUTPUT_FILENAME, SLUG, validation_errors
from amf.provenance import available_cpus, machine
from leaderboard.engine import container_engine
from leaderboard.layout import OUTPUT_SLUG, PREDICTIONS, RUN, inputs_json, natural_key, now, packed_jobs, read_output

REPO = Path(__file__).resolve().parents[1]
# {repo}/process.py rather than process.py, so `run` works from any working directory
DEFAULT_COMMAND = "{python} {repo}/process.py --input {input} --output {output} --model {model}"
TAIL_LINES = 20
BYTES_PER_JOB = 1.5 * 2**30  # a process.py job: Python, torch and one small CNN, with margin


class JobsFailed(AmfError):
    """At least one algorithm job failed or wrote an output the organizer would reject."""

    exit_code = 5


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


def _page_count(path: Path) -> int:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return len(tif.pages)


def discover_jobs(pack_dir: Path, out: Path) -> list[Job]:
    packed = packed_jobs(pack_dir)
    if not packed:
        raise InputError(f"no jobs under {pack_dir / 'jobs'}; run `python -m leaderboard pack` first")
    return [Job(j.name, j.image, j.input.resolve(), (out / "jobs" / j.name / "output").resolve(),
                _page_count(j.input / "images" / SLUG / j.image)) for j in packed]


def available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_jobs() -> int:
    """As many parallel jobs as there are CPUs, fewer if memory would not hold them."""
    memory = available_memory()
    by_memory = int(memory // BYTES_PER_JOB) if memory else available_cpus()
    return max(1, min(available_cpus(), by_memory))


def with_current_graph(model: Path, out: Path, log=print) -> Path:
    """``model`` itself when its ``model.onnx`` is current or the jobs run on CUDA; else a copy under
    ``out`` with the graph built once, so that no CPU job falls back to torch (and pays for importing
    it). A model that cannot be exported is used as it is: each job then says why."""
    from amf.engines import cuda_available
    from amf.onnx_engine import OnnxPredictor, OnnxUnusable

    if cuda_available():
        return model
    try:
        OnnxPredictor(model, threads=1)
        return model
    except OnnxUnusable as err:
        reason = str(err)
    except AmfError:
        return model
    copy = out / "model-for-cpu"
    log(f"{reason.split(';')[0]}: building it once into {copy} for this run")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("model.onnx"))
    try:
        from amf.onnx_export import export_onnx

        export_onnx(copy)
    except (AmfError, ImportError) as err:
        log(f"warning: cannot build model.onnx ({err}); the jobs run on torch")
        return model
    return copy


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
    predictions, problem = read_output(path)
    if problem:
        return ("invalid" if path.is_file() else "no output"), [problem], []
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


def run(pack_dir: Path, *, out: Path | None = None, command: str = DEFAULT_COMMAND, model: Path = Path("model"),
        container: str | None = None, engine: str | None = None, container_args: Sequence[str] = (),
        jobs: int | None = None, timeout: float | None = None, progress: bool | None = None,
        log=print) -> dict[str, Any]:
    """Run the algorithm once per job; write ``run.json``; raise :class:`JobsFailed` if any job failed."""
    from tqdm import tqdm

    out = out or pack_dir
    todo = discover_jobs(pack_dir, out)
    n_parallel = max(1, min(jobs or default_jobs(), len(todo)))
    threads = max(1, available_cpus() // n_parallel)
    env = thread_env(threads)
    engine_name = container_engine(engine) if container else None
    if not container and "{model}" in command and not model.is_dir():
        raise InputError(f"model directory {model} does not exist; pass --model DIR (a training run's <out>/model)")
    scored = with_current_graph(model, out, log) if not container and "{model}" in command else model
    live = LiveJobs()

    def launch(job: Job) -> JobResult:
        cmd = (container_command(engine_name, container, job, threads, container_args) if container and engine_name
               else process_command(command, job, scored.resolve()))
        return run_job(job, cmd, env, timeout, out / "jobs" / job.name / "log", engine_name, live)

    started, t0 = now(), time.perf_counter()
    results: list[JobResult] = []
    # a bar only on a terminal, so that a log file holds lines, not carriage returns
    bar = tqdm(total=len(todo), unit="job", desc="run", file=sys.stderr,
               disable=progress is False or not sys.stderr.isatty())
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
    results.sort(key=lambda r: natural_key(r.job))
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

