"""Latency and memory of a 16-page job: the ONNX Runtime engine, the torch engine and the reference design.

    python benchmarks/latency.py [--model DIR] [--baseline-model DIR] [--cold-runs 5] [--warm-runs 30]
                                 [--reference-warm-runs 5]
    python benchmarks/latency.py --table-only   # regenerate latency.md from latency.json, measure nothing

Everything is measured on one machine, paired and interleaved: run i of every contender before
run i+1 of any (A, B, C, A, B, C, ...), so that a change in the machine's load hits all alike.

* cold: a fresh process on test/input (16 pages), process start to JSON written: ``process.py
  --engine onnx`` (the model card's TTA, and ``--tta none``), ``process.py --engine torch``, and
  ``benchmarks/baseline_reference.py`` (the organizer's reference design: efficientnetv2_m at 224 px,
  one page at a time, random weights); wall seconds, CPU seconds and the child's peak RSS (wait4);
  with ``--baseline-model DIR``, also ``process.py --engine onnx`` on that model at its own card's TTA,
  and the table states the ``--model`` job's median wall time as a ratio of the baseline's;
* warm: a loaded predictor scoring the 16 pages in-process (page preparation + forward pass,
  ``predict_proba``), ONNX Runtime with as many threads as CPUs are available and with 1 thread,
  torch with its default thread count and 1 thread, each with TTA none and dihedral4 (and the
  card's TTA if it is another); the reference design's page loop for scale.

The benchmark exports ``model.onnx`` itself into a temporary copy of the model directory (so a
stale graph beside the real model can never be measured) and passes that copy to ``process.py``.
The same is done for ``--baseline-model``. DIR is any model directory, for instance a kept copy of the
model shipped before (nothing needs checking out: the benchmark measures whatever directory it is given).
It writes the raw numbers to benchmarks/results/latency.json and then generates latency.md from
that file; ``--table-only`` regenerates the table alone. CPU only: the ONNX Runtime engine is
CPU-only, and a CUDA job (torch) is not measured here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from amf.preprocess import VIEW_COUNTS  # noqa: E402  (torch-free; torch and onnxruntime load only to measure)
from benchmarks.driver import checkout_relative  # noqa: E402
from benchmarks.publish import publish  # noqa: E402

JOB = REPO / "test" / "input"
OUTPUT = "multiple-mitotic-figure-classification.json"
RESULTS = REPO / "benchmarks" / "results"
COLD_SPEEDUP_TARGET = 5.0  # cold 16-page CPU job with ONNX Runtime vs the reference design (issue #13)
WARM_MS_PER_MEMBER_VIEW = 30.0  # warm 16-page forward, per ensemble member and TTA view, on 2 cores
BASELINE_COLD_RATIO_TARGET = 1.5  # cold 16-page CPU job, ensemble vs the single model it replaces
SHARED_LOAD = 0.8  # a 1-minute load average at least this high at the start: the machine was not ours


# -- measuring ----------------------------------------------------------------------------------------
def cold_run(argv: list[str], n_pages: int) -> tuple[float, float, float, list[float]]:
    """One fresh process: wall seconds from its start to its exit (the JSON written), its CPU
    seconds (user + system), its peak RSS in MiB, and the confidences it wrote."""
    with tempfile.TemporaryDirectory(prefix="amf-latency-out-") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([*argv, "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if proc.returncode != 0:
            raise SystemExit(f"benchmark run failed ({proc.returncode}): {' '.join(argv)}\n{err.strip()[-2000:]}")
        written = Path(out) / OUTPUT
        if not written.is_file():
            raise SystemExit(f"benchmark run wrote no {OUTPUT}: {' '.join(argv)}")
        entries = json.loads(written.read_text(encoding="utf-8"))
    if len(entries) != n_pages:
        raise SystemExit(f"benchmark run wrote {len(entries)} entries for {n_pages} pages: {' '.join(argv)}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, [e["confidence"] for e in entries]


def measure_cold(contenders: list[dict[str, Any]], runs: int, warmup: int, n_pages: int) -> dict[str, Any]:
    """``warmup`` discarded rounds, then ``runs`` rounds, each running every contender once in turn."""
    raw = {c["name"]: {"label": c["label"], "command": c["command"], "wall_s": [], "cpu_s": [],
                       "peak_rss_mib": [], "warmup_wall_s": []} for c in contenders}
    confidences: dict[str, list[float]] = {}
    for round_ in range(warmup + runs):
        for c in contenders:
            wall, cpu, rss, conf = cold_run(c["argv"], n_pages)
            r = raw[c["name"]]
            confidences.setdefault(c["name"], conf)
            if round_ < warmup:
                r["warmup_wall_s"].append(wall)
                continue
            r["wall_s"].append(wall)
            r["cpu_s"].append(cpu)
            r["peak_rss_mib"].append(rss)
            print(f"cold {round_ - warmup + 1}/{runs} {c['name']}: {wall:.2f} s, CPU {cpu:.2f} s, {rss:.0f} MiB",
                  flush=True)
    if "onnx" in confidences and "torch" in confidences:
        gap = float(np.max(np.abs(np.subtract(confidences["onnx"], confidences["torch"]))))
        raw["agreement"] = {"max_abs_confidence_gap_onnx_vs_torch": gap}
    return raw


def measure_warm(contenders: list[dict[str, Any]], runs: int, warmup: int, gap_s: float) -> dict[str, Any]:
    """Interleaved: in each round every contender scores the pages once (``every`` k-th round only
    for a slow contender), after its ``setup`` and a short pause so one engine's spinning worker
    threads do not run into the next one's timing."""
    for c in contenders:
        for _ in range(c.get("warmup", warmup)):
            c["setup"]()
            c["call"]()
    raw = {c["name"]: {k: v for k, v in c.items() if k not in ("setup", "call", "warmup")} | {"ms": [], "cpu_ms": []}
           for c in contenders}
    for round_ in range(runs):
        for c in contenders:
            if round_ % c.get("every", 1):
                continue
            c["setup"]()
            time.sleep(gap_s)
            start, start_cpu = time.perf_counter(), time.process_time()
            c["call"]()
            raw[c["name"]]["ms"].append(1e3 * (time.perf_counter() - start))
            raw[c["name"]]["cpu_ms"].append(1e3 * (time.process_time() - start_cpu))
        if (round_ + 1) % 10 == 0 or round_ + 1 == runs:
            print(f"warm round {round_ + 1}/{runs}", flush=True)
    return raw


def reference_loop(weights: Path, pages: list[np.ndarray]) -> Callable[[], None]:
    """The reference design's warm work: its network on the CPU, page by page at batch size 1."""
    import torch

    from benchmarks import baseline_reference as ref

    model = ref.build()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()

    @torch.no_grad()
    def loop() -> None:
        for page in pages:
            x = torch.from_numpy(np.ascontiguousarray(page)).permute(2, 0, 1)[None].float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(ref.SIZE, ref.SIZE), mode="bilinear", align_corners=False)
            torch.softmax(model((x - ref.MEAN) / ref.STD), dim=1)[0, 1].item()

    return loop


def image_size() -> str:
    from amf.errors import InputError
    from leaderboard.engine import container_engine

    try:
        engine = container_engine()
    except InputError:
        return "not measured: no container engine on this machine"
    name = os.environ.get("AMF_IMAGE", "amf-midog25-t2:test")
    result = subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", name],
                            capture_output=True, text=True)
    if result.returncode == 0 and result.stdout.strip().isdigit():
        return f"{int(result.stdout.strip()) / 1e9:.2f} GB ({engine} image {name}, uncompressed)"
    return f"not measured: no {engine} image {name} built on this machine"


def model_copy(src: Path, dest: Path) -> tuple[Path, float, float | None]:
    """``src`` copied to ``dest`` without any model.onnx, then the graph exported afresh into the copy."""
    from amf.onnx_export import export_onnx

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.onnx", ".*"))
    start = time.perf_counter()
    _, check_gap = export_onnx(dest)
    return dest, time.perf_counter() - start, check_gap


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from amf.card import weights_sha256
    from amf.provenance import available_cpus, git_state, machine
    from amf.stacks import read_stack

    load_start = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc)
    card = json.loads((args.model / "model.json").read_text(encoding="utf-8"))
    card_tta, members = card["tta"], len(card.get("members") or []) or 1
    pages = read_stack(next((JOB / "images").rglob("*.tif*")))
    cpus = available_cpus()
    tmp = Path(tempfile.mkdtemp(prefix="amf-latency-"))
    try:
        print("exporting model.onnx into a copy of the model directory ...", flush=True)
        model, export_s, check_gap = model_copy(args.model, tmp / "model")
        baseline: dict[str, Any] | None = None
        if args.baseline_model is not None:
            print("exporting model.onnx into a copy of the baseline model directory ...", flush=True)
            base_card = json.loads((args.baseline_model / "model.json").read_text(encoding="utf-8"))
            base_model, base_export_s, base_check_gap = model_copy(args.baseline_model, tmp / "baseline")
            baseline = {"model": str(checkout_relative(args.baseline_model)), "card_tta": base_card["tta"],
                        "members": len(base_card.get("members") or []) or 1,
                        "weights_sha256": weights_sha256(args.baseline_model, base_card),
                        "onnx_export_s": base_export_s, "onnx_export_check_gap": base_check_gap}
        weights = tmp / "reference.pt"
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "baseline_reference.py"), "--make-weights",
                        str(weights)], check=True, cwd=REPO)

        def shown(argv: list[str]) -> str:
            text = " ".join(argv[1:]).replace(str(tmp), "$TMP").replace(str(REPO) + "/", "")
            return f"python {text} --output $OUT"

        job = [sys.executable, str(REPO / "process.py"), "--input", str(JOB), "--model", str(model), "--device", "cpu"]
        cold_set = [
            {"name": "onnx", "label": f"process.py, ONNX Runtime, TTA {card_tta} (as shipped)",
             "argv": [*job, "--engine", "onnx"]},
            {"name": "onnx_tta_none", "label": "process.py, ONNX Runtime, TTA none", "argv": [*job, "--engine", "onnx",
                                                                                           "--tta", "none"]},
            {"name": "torch", "label": f"process.py, torch, TTA {card_tta}", "argv": [*job, "--engine", "torch"]},
            {"name": "reference", "label": "reference design (baseline_reference.py)",
             "argv": [sys.executable, str(REPO / "benchmarks" / "baseline_reference.py"), "--input", str(JOB),
                      "--weights", str(weights), "--device", "cpu"]},
        ]
        if baseline is not None:
            # Right after the model's own ONNX job, so the two jobs the ratio compares run back to back.
            base_job = [sys.executable, str(REPO / "process.py"), "--input", str(JOB), "--model", str(base_model),
                        "--device", "cpu", "--engine", "onnx"]
            cold_set.insert(1, {"name": "baseline", "label": f"process.py, ONNX Runtime, baseline `{baseline['model']}`"
                                f" ({members_text(baseline['members'])}), TTA {baseline['card_tta']} (its card's)",
                                "argv": base_job})
        for c in cold_set:
            c["command"] = shown(c["argv"])
        cold = measure_cold(cold_set, args.cold_runs, args.cold_warmup, len(pages))

        import torch

        from amf.onnx_engine import OnnxPredictor
        from amf.predict import Predictor

        torch_default = torch.get_num_threads()
        ttas = list(dict.fromkeys(["none", "dihedral4", card_tta]))
        warm_set: list[dict[str, Any]] = []
        onnx_predictors = {n: OnnxPredictor(model, threads=n) for n in sorted({cpus, 1}, reverse=True)}
        for threads, predictor in onnx_predictors.items():
            for tta in ttas:
                warm_set.append({"name": f"onnx_t{threads}_{tta}", "engine": predictor.engine, "kind": "onnx",
                                 "threads": predictor.threads, "tta": tta, "views": VIEW_COUNTS[tta],
                                 "setup": lambda p=predictor, t=tta: setattr(p, "tta", t),
                                 "call": lambda p=predictor: p.predict_proba(pages)})
        torch_predictor = Predictor.from_dir(model, device="cpu")
        for threads in sorted({torch_default, 1}, reverse=True):
            for tta in ttas:
                def setup(p: Any = torch_predictor, t: str = tta, n: int = threads) -> None:
                    torch.set_num_threads(n)
                    p.tta = t

                warm_set.append({"name": f"torch_t{threads}_{tta}", "engine": f"torch {torch.__version__}",
                                 "kind": "torch", "threads": threads, "tta": tta, "views": VIEW_COUNTS[tta],
                                 "setup": setup, "call": lambda p=torch_predictor: p.predict_proba(pages)})
        prepare = onnx_predictors[1].prepare  # the numpy page preparation alone, for scale
        warm_set.append({"name": "prepare", "engine": "numpy (amf.preprocess.prepare_pages)", "kind": "prepare",
                         "threads": 1, "tta": "none", "views": 1, "setup": lambda: None,
                         "call": lambda: prepare(pages)})
        if args.reference_warm_runs > 0:
            every = max(1, args.warm_runs // args.reference_warm_runs)
            warm_set.append({"name": "reference", "engine": f"torch {torch.__version__}", "kind": "reference",
                             "threads": torch_default, "tta": "none", "views": 1, "every": every, "warmup": 1,
                             "setup": lambda: torch.set_num_threads(torch_default),
                             "call": reference_loop(weights, pages)})
        warm = measure_warm(warm_set, args.warm_runs, args.warm_warmup, args.gap_ms / 1e3)
        torch.set_num_threads(torch_default)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import onnxruntime

    return {
        "benchmark": "latency",
        "date": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_state(REPO),
        "machine": machine(),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "config": {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "table_only"},
            "model": str(checkout_relative(args.model)),
            "card_tta": card_tta, "members": members, "weights_sha256": weights_sha256(args.model, card),
            "n_pages": len(pages), "available_cpus": cpus,
            "torch_default_threads": torch_default, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "nice": os.nice(0), "onnx_export_s": export_s, "onnx_export_check_gap": check_gap,
            "shared_with": args.shared_with,
        } | ({"baseline": baseline} if baseline is not None else {}),
        "cold": cold,
        "warm": warm,
        "image_size": image_size(),
    }


# -- the table ----------------------------------------------------------------------------------------
def stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "p90": float(np.percentile(xs, 90))}


def verdict(ok: bool) -> str:
    return "**MET**" if ok else "**NOT met**"


def members_text(members: int) -> str:
    return f"{members} member{'s' * (members > 1)}"


def cold_ratio(model_s: float, baseline_s: float) -> float:
    """How many times the baseline's time the model's job takes (above 1: the model is slower)."""
    if baseline_s <= 0:
        raise ValueError(f"baseline time must be positive, got {baseline_s}")
    return model_s / baseline_s


def baseline_line(raw: dict[str, Any]) -> str | None:
    """The ``--model`` cold ONNX job against the baseline's, median wall (and CPU) seconds; None
    when the run measured no baseline."""
    cfg, cold = raw["config"], raw["cold"]
    base = cfg.get("baseline")
    if base is None or "baseline" not in cold:
        return None
    model_s, base_s = statistics.median(cold["onnx"]["wall_s"]), statistics.median(cold["baseline"]["wall_s"])
    ratio = cold_ratio(model_s, base_s)
    cpu = cold_ratio(statistics.median(cold["onnx"]["cpu_s"]), statistics.median(cold["baseline"]["cpu_s"]))
    return (f"Cold {cfg['n_pages']}-page job, ONNX Runtime as shipped: model ({members_text(cfg['members'])}, "
            f"TTA {cfg['card_tta']}) {model_s:.2f} s vs baseline ({members_text(base['members'])}, TTA "
            f"{base['card_tta']}) {base_s:.2f} s: {ratio:.2f}× (CPU seconds {cpu:.2f}×; budget ≤ "
            f"{BASELINE_COLD_RATIO_TARGET:g}×: {verdict(ratio <= BASELINE_COLD_RATIO_TARGET)}). Baseline: "
            f"`{base['model']}`, weights sha256 {base['weights_sha256'][:12]}…, its `model.onnx` exported afresh "
            f"into a temporary copy ({base['onnx_export_s']:.1f} s, matches torch to "
            f"{base['onnx_export_check_gap']:.1e}).")


def targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets, each with its budget, the measured number and whether it is met."""
    cfg, cold, warm = raw["config"], raw["cold"], raw["warm"]
    members, tta, cpus = cfg["members"], cfg["card_tta"], cfg["available_cpus"]
    ref = stats(cold["reference"]["wall_s"])["median"]
    ort, ort_none = stats(cold["onnx"]["wall_s"])["median"], stats(cold["onnx_tta_none"]["wall_s"])["median"]
    cpu_ratio = statistics.median(cold["reference"]["cpu_s"]) / statistics.median(cold["onnx"]["cpu_s"])
    out = [{"what": f"cold 16-page CPU job, ONNX Runtime as shipped (TTA {tta}), ≥ {COLD_SPEEDUP_TARGET:g}× "
                    "faster than the reference design",
            "budget": f"≥ {COLD_SPEEDUP_TARGET:g}×", "met": ref / ort >= COLD_SPEEDUP_TARGET,
            "measured": f"{ref / ort:.2f}× ({ort:.2f} s vs {ref:.2f} s median wall; {cpu_ratio:.1f}× in CPU seconds; "
                        f"with `--tta none` {ref / ort_none:.2f}×, {ort_none:.2f} s)"}]
    for tta_key, label in (("none", "one member, no TTA"),
                           (tta, f"the shipped predictor ({members} member{'s' * (members > 1)} × "
                                 f"{VIEW_COUNTS[tta]} {tta} views)")):
        per = members if tta_key == "none" else members * VIEW_COUNTS[tta]
        budget = WARM_MS_PER_MEMBER_VIEW * per
        shipped = stats(warm[f"onnx_t{cpus}_{tta_key}"]["ms"])["median"]
        one = stats(warm[f"onnx_t1_{tta_key}"]["ms"])
        # What an idle machine could at best do: the fastest 1-thread run split perfectly over the cores.
        ideal = one["min"] / cpus
        note = (f"; all {members} members run, so the budget is {WARM_MS_PER_MEMBER_VIEW:g} ms × {members}"
                if tta_key == "none" and members > 1 else "")
        where = f"{cpus} cores" + (" (the target is for 2)" if cpus != 2 else "")
        out.append({"what": f"warm 16-page forward of {label}, ONNX Runtime with {cpus} threads on {where}",
                    "budget": f"≤ {budget:g} ms", "met": shipped <= budget,
                    "measured": f"{shipped:.1f} ms median (1 thread: {one['median']:.1f} ms, "
                                f"{'within' if one['median'] <= budget else 'over'} budget; fastest 1-thread run "
                                f"{one['min']:.1f} ms, so even perfect scaling over {cpus} idle cores gives "
                                f"≈ {ideal:.0f} ms, {'within' if ideal <= budget else 'over'} budget){note}"})
    base = cfg.get("baseline")
    if base is not None and "baseline" in cold:
        ratio = cold_ratio(ort, stats(cold["baseline"]["wall_s"])["median"])
        out.append({"what": f"cold 16-page CPU job, ONNX Runtime as shipped, ≤ {BASELINE_COLD_RATIO_TARGET:g}× the "
                            f"model it replaces ({members_text(base['members'])}, TTA {base['card_tta']})",
                    "budget": f"≤ {BASELINE_COLD_RATIO_TARGET:g}×", "met": ratio <= BASELINE_COLD_RATIO_TARGET,
                    "measured": f"{ratio:.2f}× (paired and interleaved; see the line below the cold table)"})
    return out


def render(raw: dict[str, Any]) -> str:
    cfg, cold, warm, load = raw["config"], raw["cold"], raw["warm"], raw["load_average"]
    m, commit = raw["machine"], raw["commit"]
    args = cfg["args"]
    ref_cold = stats(cold["reference"]["wall_s"])["median"]
    lines = [
        f"# Latency of a {cfg['n_pages']}-page job on the CPU: ONNX Runtime, torch and the reference design",
        "",
        f"Generated from [`latency.json`](latency.json) by `python benchmarks/latency.py`. Measured "
        f"{raw['date'][:16].replace('T', ' ')} UTC at commit {commit['commit']}"
        f"{' (working tree dirty)' if commit.get('dirty') else ''} on {m['cpu']}, {m['cpus']} CPUs available, "
        f"{m['memory_gib']} GiB RAM, {m['gpu'] or 'no GPU'}; Python {m['python']}, torch {cfg['torch']}, "
        f"onnxruntime {cfg['onnxruntime']}; benchmark niceness {cfg['nice']}. Model: `{cfg['model']}` "
        f"({cfg['members']} member{'s' * (cfg['members'] > 1)}, card TTA {cfg['card_tta']}), its `model.onnx` "
        f"exported afresh into a temporary copy ({cfg['onnx_export_s']:.1f} s, "
        f"matches torch to {cfg['onnx_export_check_gap']:.1e}).",
        "",
        f"1-minute load average {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at the end.",
    ]
    if load["start"][0] >= SHARED_LOAD:
        lines[-1] += (f" **The machine was shared** with {cfg.get('shared_with') or 'other work'} (load ≥ "
                      f"{SHARED_LOAD} at the start), and the benchmark ran at niceness {cfg['nice']}, so wall times "
                      "overstate what the same work costs on an idle machine; CPU seconds are less affected. "
                      "Every contender ran interleaved with the others, so the comparisons between them hold.")
    lines += ["", "## Targets (issue #13)", "", "| target | budget | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {t['what']} | {t['budget']} | {t['measured']} | {verdict(t['met'])} |" for t in targets(raw)]
    lines += [
        "",
        f"## Cold: process start to JSON written, {cfg['n_pages']} pages (test/input)",
        "",
        f"Median of {args['cold_runs']} runs per contender, interleaved (run i of every contender before run i+1 of "
        f"any), after {args['cold_warmup']} discarded round(s). Peak RSS of the child process (wait4), the largest "
        "over its runs; CPU = user + system seconds of the child.",
        "",
        "| contender | wall median | min – max | CPU s (median) | peak RSS | reference ÷ this |",
        "|---|---|---|---|---|---|",
    ]
    names = ("onnx", *(("baseline",) if "baseline" in cold else ()), "onnx_tta_none", "torch", "reference")
    for name in names:
        r = cold[name]
        s, c = stats(r["wall_s"]), statistics.median(r["cpu_s"])
        lines.append(f"| {r['label']} | {s['median']:.2f} s | {s['min']:.2f} – {s['max']:.2f} s | {c:.2f} s | "
                     f"{max(r['peak_rss_mib']):,.0f} MiB | {ref_cold / s['median']:.2f}× |")
    lines += ["", "Commands: " + "; ".join(f"`{cold[n]['command']}`" for n in names) + "."]
    if (line := baseline_line(raw)) is not None:
        lines += ["", line]
    if "agreement" in cold:
        lines += ["", "The ONNX Runtime and torch jobs wrote confidences within "
                  f"{cold['agreement']['max_abs_confidence_gap_onnx_vs_torch']:.1e} of each other."]
    lines += [
        "",
        f"## Warm: {cfg['n_pages']} pages scored by a loaded predictor, in-process",
        "",
        f"`predict_proba` on the 16 pages: page preparation (numpy) + the forward pass of all pages and TTA views in "
        f"one batch. {args['warm_runs']} runs per contender, interleaved, after {args['warm_warmup']} warm-up "
        f"calls each, with a {args['gap_ms']:g} ms pause before each timed call; CPU = process CPU time during "
        "the call (all threads).",
        "",
        "| engine | threads | TTA (views per page) | median | min | p90 | CPU (median) | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in warm.values():
        s = stats(r["ms"])
        label = {"onnx": f"ONNX Runtime {cfg['onnxruntime']}", "torch": f"torch {cfg['torch']}",
                 "prepare": "page preparation alone (numpy)",
                 "reference": "reference design, page by page at batch 1, 224 px"}.get(r["kind"], r["engine"])
        threads = str(r["threads"])
        if r["kind"] == "onnx" and r["threads"] == cfg["available_cpus"]:
            threads += " (= CPUs, as shipped)"
        elif r["kind"] in ("torch", "reference") and r["threads"] == cfg.get("torch_default_threads"):
            threads += " (torch default)"
        lines.append(f"| {label} | {threads} | {r['tta']} ({r['views']}) | {s['median']:,.1f} ms | "
                     f"{s['min']:,.1f} ms | {s['p90']:,.1f} ms | {statistics.median(r['cpu_ms']):,.1f} ms | "
                     f"{len(r['ms'])} |")
    if load["start"][0] >= SHARED_LOAD:
        lines += ["", "On a shared machine a forward split over all CPUs waits at every layer for its thread that "
                  "shares a core with the other work (most of all torch's OpenMP threads, at a lower priority); "
                  "the 1-thread rows show the cost of the work itself."]
    lines += [
        "",
        f"Image size: {raw['image_size']}.",
        "",
        "Cold times include Python start-up and imports (a CPU job with ONNX Runtime imports neither torch nor "
        "timm), reading the stack and loading the model. The reference design uses random weights loaded from a "
        "checkpoint, which does not change its speed.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "model")
    parser.add_argument("--baseline-model", type=Path, default=None,
                        help="a second model directory whose cold ONNX job (at its card's TTA) the --model job is "
                             "compared with, interleaved in the same rounds")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--cold-warmup", type=int, default=1, help="discarded interleaved rounds before the cold runs")
    parser.add_argument("--warm-runs", type=int, default=30)
    parser.add_argument("--warm-warmup", type=int, default=3)
    parser.add_argument("--reference-warm-runs", type=int, default=5,
                        help="warm runs of the (slow) reference design, spread over the warm rounds; 0 skips it")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause before each timed warm call")
    parser.add_argument("--shared-with", default="a training run",
                        help="what else runs on this machine, named in the table when the load says it was shared")
    parser.add_argument("--json", type=Path, default=RESULTS / "latency.json", help="raw results (written, or read)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.md", help="the generated table")
    parser.add_argument("--table-only", action="store_true", help="regenerate --out from --json without measuring")
    args = parser.parse_args(argv)
    if args.table_only:
        return publish(json.loads(args.json.read_text(encoding="utf-8")), render, args.out)
    if not (args.model / "model.json").is_file():
        parser.error(f"--model {args.model} is not a model directory")
    if args.baseline_model is not None and not (args.baseline_model / "model.json").is_file():
        parser.error(f"--baseline-model {args.baseline_model} is not a model directory")
    if args.cold_runs < 1 or args.warm_runs < 1:
        parser.error("--cold-runs and --warm-runs must be at least 1")
    return publish(measure(args), render, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())
