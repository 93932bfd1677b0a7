"""``evaluate``: the jobs' outputs checked and scored by the organizer's rules, overall and per
domain, into the organizer's metrics.json "aggregates" block, a table and plots.

The ranking score of a page is ``score_of(entry)``, i.e. its confidence, which the output contract
defines as P(atypical) whichever class the page names (README, "Confidence semantics")."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from amf import CLASS_NAMES
from amf.atomic import write_json_atomic
from amf.errors import AmfError, InputError, PredictionError
from amf.metrics import METRIC_NAMES, domain_metrics
from amf.organizer import OUTPUT_FILENAME, SLUG, score_of, validation_errors
from leaderboard.layout import (
    DOMAIN_NAMES_FILE,
    GROUND_TRUTH,
    METRICS,
    OUTPUT_SLUG,
    PREDICTIONS,
    RUN,
    natural_key,
    now,
    packed_jobs,
    read_output,
)
from leaderboard.plots import write_plots
from leaderboard.scored import Scored


class OutputsRejected(PredictionError):
    """The organizer's evaluation would reject these outputs."""


class NotScorable(AmfError):
    """The outputs are valid but the organizer's evaluation would abort on this ground truth."""

    exit_code = 6


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
        labels, tumour_domains = item["labels"], item["tumordomains"]
        if (not isinstance(labels, list) or not isinstance(tumour_domains, list)
                or len(labels) != len(tumour_domains)):
            raise InputError(f"{where}: labels and tumordomains must be lists of one length")
        bad = [v for v in labels if v not in CLASS_NAMES]
        if bad:
            raise InputError(f"{where}: label {bad[0]!r} is not one of {', '.join(CLASS_NAMES)}")
        if item["image"] in table:
            raise InputError(f"{where}: image {item['image']!r} appears twice")
        table[item["image"]] = ([CLASS_NAMES.index(v) for v in labels], tumour_domains)
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
    return [(j.name, j.image, run_dir / "jobs" / j.name / "output" / OUTPUT_FILENAME) for j in packed_jobs(pack_dir)]


def collect(run_dir: Path, pack_dir: Path, truth: dict[str, tuple[list[int], list[Any]]],
            allow_missing: bool = False) -> Scored:
    """Match jobs to the ground truth by input image name and check every output as the organizer does."""
    y_true: list[int] = []
    y_pred: list[int] = []
    y_score: list[float] = []
    tumour_domains: list[Any] = []
    rejected: list[str] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    jobs = find_outputs(run_dir, pack_dir)
    for name, image, path in jobs:
        if image not in truth:
            rejected.append(f"{name}: No GT for this image: {image}")
            continue
        output, problem = read_output(path)
        if problem and not path.exists():
            if allow_missing:
                continue  # reported below with the other stacks that have no output
            problem += "; the job failed, and on the platform a failed job fails the submission"
        if problem:
            rejected.append(f"{name}: {problem}")
            continue
        if image in seen:
            warnings.append(f"{name} and {seen[image]} both ran on {image}; the organizer counts it twice, so do we")
        seen[image] = name
        labels, page_domains = truth[image]
        errors = validation_errors(output, len(labels), strict=False)
        if errors:
            rejected.extend(f"{name}: {e}" for e in errors[:5])
            continue
        warnings.extend(f"{name}: {w}" for w in validation_errors(output, len(labels), strict=True)[:3])
        y_true += labels
        tumour_domains += page_domains
        y_pred += [CLASS_NAMES.index(e["class"]) for e in output]
        y_score += [score_of(e) for e in output]
    if rejected:
        raise OutputsRejected(f"the organizer's evaluation would fail on {len(rejected)} problem(s): "
                              + " | ".join(rejected[:10]) + (" | ..." if len(rejected) > 10 else ""))
    unrun = sorted(set(truth) - set(seen), key=natural_key)
    if unrun:
        shown = ", ".join(unrun[:5]) + (", ..." if len(unrun) > 5 else "")
        note = f"{len(unrun)} ground-truth stacks have no job output ({shown})"
        if not allow_missing:
            raise OutputsRejected(note + "; the platform runs every stack (pass --allow-missing to score the rest)")
        warnings.append(note + "; scored without them")
    if not y_true:
        raise OutputsRejected(f"no job outputs to score in {run_dir / 'jobs'}")
    return Scored(np.array(y_true), np.array(y_pred), np.array(y_score, dtype=np.float64),
                  np.array(tumour_domains), len(jobs), warnings)


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


def evaluate(run_dir: Path, *, ground_truth_path: Path | None = None, domain_names_path: Path | None = None,
             out: Path | None = None, plots: bool = True, allow_missing: bool = False,
             log=print) -> dict[str, Any]:
    """The organizer's metrics for a run's outputs; writes metrics.json and plots into ``out``."""
    pack_dir = _pack_of(run_dir)
    gt_path = ground_truth_path or pack_dir / GROUND_TRUTH
    names = _load_domain_names(domain_names_path or gt_path.parent / DOMAIN_NAMES_FILE)
    scored = collect(run_dir, pack_dir, load_ground_truth(gt_path), allow_missing)
    result = domain_metrics(scored.y_true, scored.y_score, scored.tumour_domains.tolist(), y_pred=scored.y_pred)
    result.pop("threshold")  # the classes come from the outputs, not from a threshold here
    for key, m in result["per_domain"].items():
        m["name"] = names.get(key, key)
    report = {
        "aggregates": organizer_aggregates(result), "overall": result["overall"], "per_domain": result["per_domain"],
        "organizer_errors": result["organizer_errors"], "warnings": scored.warnings, "n_jobs": scored.n_jobs,
        "n_pages": len(scored.y_true), "ground_truth": str(gt_path), "run": str(run_dir), "created": now(),
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
