"""Validation-only studies of the input, the backbone and the stain jitter, one resumable driver.

    python -m benchmarks.studies crop --commit            # full 128 px patch vs a centre crop upscaled to 128
    python -m benchmarks.studies backbone --commit        # tf_efficientnet_lite0 vs tf_efficientnet_lite2
    python -m benchmarks.studies stain --commit           # the HED stain jitter's range (multiplicative, additive)
    python -m benchmarks.studies crop backbone --commit   # both, the crop study first
    python -m benchmarks.studies crop --dry-run           # print the plan and what is done, train nothing
    python -m benchmarks.studies crop --table-only        # regenerate benchmarks/results/crop.md

Every run trains the first model's recipe with the imbalance handling that won on validation
(``BASE_CONFIG`` with ``BASE``) on the slide-grouped holdout split of AMi-Br and is scored on
its validation split only (the same domains; no held-out domain is looked at), last epoch, no
TTA; two seeds per variant. Each distinct training is one raw JSON,
``benchmarks/results/studies/<variant>-s<seed>.json`` (config, code commit, validation curve and
metrics, training step time), whichever study asked for it: every study's default is that recipe
unchanged, so its two seeds train once and serve both tables (about 1.5 CPU-hours saved). A
run whose JSON exists is skipped, and an interrupted one resumes from its checkpoint under
``runs/studies/``. ``benchmarks/results/<study>.md`` is generated from the JSONs alone. The centre
crop is ``data.center_crop`` (amf/preprocess.py, recorded in model.json, so inference crops the
same way).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from amf.atomic import write_json_atomic, write_text_atomic
from amf.provenance import git_state
from benchmarks.answers import BASE_CONFIG, IMBALANCE_ANSWER
from benchmarks.driver import (
    EPOCHS,
    REPO,
    by_question,
    checkout_relative,
    commit_files,
    config_setting,
    grouped,
    load_results,
    plan_then_tables,
    raw_result,
    result_state,
    train_planned,
)
from benchmarks.spread import VAL_AUC_RULE, fmt, val_auc_against_default

RESULTS = REPO / "benchmarks/results/studies"

# Every run, the default included, trains the first model's recipe with the imbalance handling that won
# on validation (benchmarks/results/choices.md): a fixed base, so the defaults moving on with a shipped
# model change neither a row's config nor its committed result's digest.
BASE = IMBALANCE_ANSWER

# study -> variant -> training overrides; the first variant is the default it is compared with.
STUDIES: dict[str, dict[str, list[str]]] = {
    "crop": {
        "full 128 px patch (reference)": [],
        "centre 80 px upscaled to 128": ["data.center_crop=80"],
        "centre 64 px upscaled to 128": ["data.center_crop=64"],
    },
    "backbone": {
        "tf_efficientnet_lite0 (reference)": [],
        "tf_efficientnet_lite2": ["model.backbone=tf_efficientnet_lite2"],
    },
    # The stain jitter's multiplicative range per HED channel (alpha in [1 - sigma, 1 + sigma]; the additive
    # +-0.02 stays): ours is Tellez et al.'s "HED-light" range (Med. Image Anal. 2019), 0.2 their
    # "HED-strong" one; 0.4 goes past it. A lab or scanner shift moves stain densities by more than 5%.
    # The additive bias (+-0.02, 0.05 in the last row) makes most of the visible change at these densities
    # (python -m training.augment_preview).
    "stain": {
        "HED jitter, sigma 0.05 (reference)": [],
        "HED jitter, sigma 0.2 (Tellez et al.'s strong)": ["augment.hed_sigma=0.2"],
        "HED jitter, sigma 0.4": ["augment.hed_sigma=0.4"],
        "HED jitter, sigma 0.05, bias 0.05": ["augment.hed_bias=0.05"],
    },
}


# Studies whose variants run the very same training step, and why: their runs' logged step times measure
# the machine and its load on the day, never the variant, so the table shows none.
SAME_STEP = {
    "crop": "the crop is cut and upscaled to 128 px once, when the patches are decoded",
    "stain": "the jitter's range changes the random numbers' bounds, not the operations",
}


def variant_slug(overrides: list[str]) -> str:
    text = "-".join(overrides) or "default"
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def plan(studies: list[str], seeds: int) -> list[tuple[str, list[str], int]]:
    """Study by study, the default at every seed first (a call needs its spread), then each variant at
    every seed; a training two studies share (their default) appears once, where it is first asked for."""
    order: list[tuple[str, list[str], int]] = []
    seen: set[tuple[str, int]] = set()
    for study in studies:
        variants = STUDIES[study]
        for name, seed in by_question([list(variants)], seeds):
            if (variant_slug(variants[name]), seed) not in seen:
                seen.add((variant_slug(variants[name]), seed))
                order.append((name, variants[name], seed))
    return order


def command(out: Path, overrides: list[str], seed: int, epochs: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "training.train", "--config", BASE_CONFIG, f"run.out={out}",
            f"run.seed={seed}", f"optim.epochs={epochs}", "run.tta=none", "run.progress=false",
            "data.split=holdout", *BASE, *extra, *overrides]


def speed(run: Path) -> dict[str, Any]:
    """Training speed from metrics.jsonl: seconds per optimiser step and images per second (medians over epochs)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    steps = [r["step"] - (epochs[i - 1]["step"] if i else 0) for i, r in enumerate(epochs)]
    per_step = [r["seconds"] / s for r, s in zip(epochs, steps, strict=True) if s]
    card = json.loads((run / "model" / "model.json").read_text())
    return {"step_seconds_median": statistics.median(per_step) if per_step else math.nan,
            "images_per_s_median": statistics.median(r["images_per_s"] for r in epochs) if epochs else math.nan,
            "epoch_seconds_median": statistics.median(r["seconds"] for r in epochs) if epochs else math.nan,
            "parameters": card.get("parameters")}


def run_plan(args: argparse.Namespace) -> None:
    code = git_state(REPO)
    done = 0
    for name, overrides, seed in plan(args.studies, args.seeds):
        if args.only and variant_slug(overrides) not in args.only:
            continue
        slug = f"{variant_slug(overrides)}-s{seed}"
        result = args.results / f"{slug}.json"
        out = args.runs / slug
        cmd = command(out, overrides, seed, args.epochs, args.extra)
        starts = not args.dry_run and result_state(result, cmd) == "to run"
        if starts and args.limit is not None and done >= args.limit:
            break
        done += starts
        seconds = train_planned(result, out, cmd, f"{name}, seed {seed} ({slug})", args.dry_run)
        if seconds is None:
            continue
        labels = {"variant_slug": variant_slug(overrides), "overrides": overrides, "seed": seed}
        record = raw_result(out, labels, code, seconds)
        record["speed"] = speed(out)
        record["selection"] = "last epoch; validation split only (in-domain); no TTA"
        write_json_atomic(result, record, nan_as_null=True)
        tables = [write_table(study, args.results) for study in studies_of(overrides)]
        if args.commit:
            commit_files([result, *(path for path, _ in tables)], f"studies: {name}, seed {seed}")


def recipe_words(records: list[dict[str, Any]], reference: list[dict[str, Any]]) -> str:
    """What every variant shares, read from the runs' configs; the backbone is the reference's, which the
    variants keep unless they say otherwise."""
    if not records:
        return "the first model's recipe with the imbalance answer"
    return (f"{config_setting(records, 'optim', 'epochs')} epochs of the full recipe on "
            f"{config_setting(reference or records, 'model', 'backbone')} unless the variant says otherwise, "
            f"{config_setting(records, 'optim', 'sampler')} sampling with "
            f"{config_setting(records, 'optim', 'loss')} loss")


def studies_of(overrides: list[str]) -> list[str]:
    """The studies whose tables a training appears in."""
    return [study for study, variants in STUDIES.items() if overrides in variants.values()]


def table_path(study: str, results: Path) -> Path:
    return results.parent / f"{study}.md"


def step_time_path(study: str, results: Path) -> Path:
    """benchmarks/step_time.py's paired measurement of the study's variants, beside its table."""
    return results.parent / f"{study}_step_time.json"


def _paired_cells(s: dict[str, Any] | None, reference: bool) -> str:
    """One variant's step time, images per second and step against the reference's (with the rounds'
    range, which the reference's own row, 1.00 in every round, leaves out)."""
    if s is None:
        return "– | – | –"
    spread = s.get("step_vs_reference_range")
    ratio = f"{s['step_vs_reference']:.2f}×" + (" ({:.2f}–{:.2f})".format(*spread) if spread and not reference else "")
    return f"{s['step_seconds_median']:.3f} | {s['images_per_s']:.1f} | {ratio}"


def speed_columns(study: str, results: Path, records: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, str], str]:
    """Per variant, its step-time cells, and the sentence saying where they come from: the paired
    measurement on one machine where there is one; none where the variants run the same step
    (``SAME_STEP``); else the runs' own logs (comparable only within one machine and load, which runs
    across sessions do not share)."""
    path = step_time_path(study, results)
    if path.exists():
        paired = json.loads(path.read_text())
        reference = next(iter(STUDIES[study]))
        cells = {name: _paired_cells(paired["summary"].get(name), name == reference) for name in STUDIES[study]}
        return cells, (f"Step time: paired on one machine by `python -m benchmarks.step_time {study}` "
                       f"([`{path.name}`]({path.name}); {paired['machine_text']}): each "
                       f"variant's full recipe step at batch {paired['batch_size']} on a synthetic batch, "
                       f"{paired['threads']} threads, the variants taking turns over {paired['rounds']} rounds, "
                       "median seconds per step; the step against the reference's is the median of the rounds' "
                       "ratios, their range across rounds in brackets.")
    if study in SAME_STEP:
        return ({name: "– | – | 1× by construction" for name in STUDIES[study]},
                f"Step time: the same for every variant by construction ({SAME_STEP[study]}); the runs' logged "
                "times, in their raw JSONs, measure the machine and its load on the day, not the variant.")
    cells = {name: f"{fmt([r['speed']['step_seconds_median'] for r in rs])} | "
                   f"{fmt([r['speed']['images_per_s_median'] for r in rs])} | –"
             for name, rs in ((n, records.get(variant_slug(o), [])) for n, o in STUDIES[study].items())}
    return cells, ("Step time: median seconds per optimiser step over epochs, from each run's own log (the "
                   "machines are named below; runs on different days or beside other work do not compare; "
                   "`python -m benchmarks.step_time` measures them paired).")


def write_table(study: str, results: Path) -> tuple[Path, str]:
    records = load_results(results)
    by = grouped(records, lambda r: r["variant_slug"])
    variants = STUDIES[study]
    default = by.get(variant_slug(next(iter(variants.values()))), [])
    speeds, speed_words = speed_columns(study, results, by)
    rows, used = [], []
    for name, overrides in variants.items():
        rs = by.get(variant_slug(overrides), [])
        used += rs
        auc = [r["student"]["val"]["roc_auc"] for r in rs]
        rows.append(f"| {name} | {len(rs)} | {fmt(auc)} | {fmt([r['student']['val']['balanced_accuracy'] for r in rs])}"
                    f" | {speeds[name]} | {val_auc_against_default(rs, default)} |")
    commits = sorted({f"{r['code']['commit']}{' (dirty)' if r['code']['dirty'] else ''}" for r in used})
    machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cpus']} cores, {r['machine']['gpu'] or 'no GPU'}"
                       for r in used})
    text = "\n".join([
        f"# Study: {study}, picked on in-domain validation (AMi-Br)", "",
        f"Generated by `python -m benchmarks.studies {study} --table-only` from "
        f"`{checkout_relative(results)}/*.json` (the reference's runs serve every study); do not edit by hand.", "",
        f"Each variant: {recipe_words(used, default)} on the slide-grouped holdout split, scored on its validation "
        "split only, last epoch, no TTA. Val AUC is the criterion; val BA is at the threshold picked on the same "
        "split, so it is optimistic. Mean ± sd over seeds (¹ one seed). " + VAL_AUC_RULE, "", speed_words, "",
        "| variant | runs | val AUC | val BA | s / step | images / s | step vs reference "
        "| against the reference (val AUC) |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Runs: {len(used)}. Code: {', '.join(commits) or '–'}. Machines: {'; '.join(machines) or '–'}.", ""])
    path = table_path(study, results)
    write_text_atomic(path, text)
    return path, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("words", nargs="+", metavar="study|KEY=VALUE",
                        help=f"one or more studies ({', '.join(STUDIES)}), run in the order given, then any training "
                             "overrides for every run, e.g. run.threads=2")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=REPO / "runs/studies", help="run folders")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="raw JSONs, one per training, shared by the studies")
    parser.add_argument("--only", type=lambda v: v.split(","), default=[],
                        help="variant slugs to run, comma-separated (see --dry-run), e.g. data-center-crop-80")
    parser.add_argument("--limit", type=int, help="train at most this many runs now (the rest on the next call)")
    parser.add_argument("--commit", action="store_true", help="git-commit each raw result as it lands")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and what is done; train nothing")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_intermixed_args(argv)  # studies, options and overrides in any order
    args.studies = [w for w in args.words if "=" not in w]
    args.extra = [w for w in args.words if "=" in w]
    unknown = [w for w in args.studies if w not in STUDIES]
    if unknown or not args.studies:
        parser.error(f"unknown study {unknown[0]!r}; choose from {', '.join(STUDIES)}" if unknown
                     else "name at least one study")
    return plan_then_tables(args, run_plan,
                            lambda results: "\n".join(write_table(study, results)[1] for study in args.studies))


if __name__ == "__main__":
    sys.exit(main())
