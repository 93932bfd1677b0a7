"""``python -m leaderboard {pack,run,evaluate}``: the flags, and errors as one line and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amf.errors import AmfError
from leaderboard.jobs import DEFAULT_COMMAND, default_jobs, run
from leaderboard.layout import DOMAIN_NAMES_FILE, RUN
from leaderboard.packing import SAMPLE_DPI, pack
from leaderboard.scoring import evaluate


def _dpi(text: str) -> tuple[int, int]:
    parts = [round(float(v)) for v in text.split(",")]
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise argparse.ArgumentTypeError("--dpi takes X or X,Y, positive")
    return (parts[0], parts[-1])


# verb -> (its line in `--help`, the description atop `<verb> --help`)
VERB_HELP = {
    "pack": ("manifest(s) + patches -> organizer-style jobs and ground_truth.json",
             "Pack labelled patches into multi-page TIFF stacks (one job each) and the organizer's ground_truth.json."),
    "run": ("run the algorithm once per job, as the platform does",
            "Run the algorithm once per stack in a fresh process or container, each with its own input and output "
            "folder; record status and wall time in run.json."),
    "evaluate": ("the organizer's metrics from the jobs' outputs",
                 "Check every output as the organizer's evaluator does and compute balanced accuracy, sensitivity, "
                 "specificity, accuracy and ROC AUC, overall and per domain."),
}


def _verb(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    summary, description = VERB_HELP[name]
    return sub.add_parser(name, help=summary, description=description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m leaderboard",
        description="Score a model like the MIDOG 2025 Track 2 organizers, locally: pack labelled patches into "
                    "Grand Challenge jobs, run the algorithm once per job, evaluate with the organizer's rules.")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = _verb(sub, "pack")
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

    r = _verb(sub, "run")
    r.add_argument("pack", type=Path, help="folder written by `pack`")
    r.add_argument("--out", type=Path, help="where outputs and run.json go (default: the pack folder)")
    r.add_argument("--model", type=Path, default=Path("model"), help="model directory for {model} (default: model)")
    r.add_argument("--command", default=DEFAULT_COMMAND,
                   help="job command template, split like a shell line; placeholders {python} {repo} {input} {output} "
                        "{model} {job} "
                        f"(default: {DEFAULT_COMMAND!r})")
    r.add_argument("--container", metavar="IMAGE", help="run this container image per job instead "
                   "(--network none, /input read-only, /output writable)")
    r.add_argument("--engine", choices=("docker", "podman"), help="container engine (default: $CONTAINER_ENGINE, "
                   "else docker when its daemon answers, else podman)")
    r.add_argument("--container-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `<engine> run`, e.g. --container-arg=--gpus=all; repeatable")
    r.add_argument("--jobs", "-j", type=int, help=f"parallel jobs (default here: {default_jobs()}, from CPUs "
                   "and free memory)")
    r.add_argument("--timeout", type=float, help="seconds before a job is killed (default: none)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = _verb(sub, "evaluate")
    e.add_argument("run", type=Path, help="folder with run.json and jobs/<job>/output (the pack or run --out)")
    e.add_argument("--ground-truth", type=Path, help="ground_truth.json (default: the pack's)")
    e.add_argument("--domain-names", "--domains", type=Path, dest="domain_names",
                   help=f"{DOMAIN_NAMES_FILE} with the domain names (default: beside the ground truth)")
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
            evaluate(args.run, ground_truth_path=args.ground_truth, domain_names_path=args.domain_names, out=args.out,
                     plots=not args.no_plots, allow_missing=args.allow_missing, log=_log)
    except AmfError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; running jobs were stopped", file=sys.stderr)
        return 130
    return 0
