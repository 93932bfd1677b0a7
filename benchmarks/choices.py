"""The design choices the recipe leaves open, each picked on in-domain validation data only.

    python -m benchmarks.choices --commit            # run what is missing (resumable), commit each result
    python -m benchmarks.choices --dry-run           # print the plan and what is done, train nothing
    python -m benchmarks.choices --questions attention imbalance --commit   # some questions only
    python -m benchmarks.choices --table-only        # regenerate the table from the raw results

Every variant trains on the slide-grouped holdout split of all of AMi-Br and is scored on its
validation split (the same domains as training); no held-out domain is ever looked at, so the
leave-one-domain-out ablation stays an honest test. Each row changes one thing against its
question's default: imbalance and attention on ERM, the alignment's form and strength on
ERM+Align. Two seeds each; a difference within the seed spread is reported as none. A question
asked after another is answered builds on that answer: the alignment runs train with the imbalance
handling that won (``benchmarks/answers.py``), as the recipe that ships next does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from amf.atomic import write_json_atomic, write_text_atomic
from amf.provenance import git_state
from benchmarks.ablation import ARMS
from benchmarks.answers import BASE_CONFIG, IMBALANCE_ANSWER
from benchmarks.driver import (
    EPOCHS,
    REPO,
    by_question,
    checkout_relative,
    commit_files,
    grouped,
    load_results,
    plan_then_tables,
    raw_result,
    train_planned,
)
from benchmarks.spread import VAL_AUC_RULE, fmt, val_auc_against_default

RESULTS = REPO / "benchmarks/results/choices"

# question -> variant -> (ablation arm it modifies, overrides). The first variant of each question is its
# default; questions run in this order, so a budget cut short answers the first ones (see plan).
QUESTIONS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "attention": {
        "CBAM channel+spatial (reference)": ("ERM", []),
        "plain average pooling": ("ERM", ["model.attention=none"]),
        "gated attention pooling": ("ERM", ["model.attention=attnpool"]),
    },
    "imbalance": {
        "balanced sampler + CE (reference)": ("ERM", []),
        "shuffle + class-weighted CE": ("ERM", [*IMBALANCE_ANSWER]),
        "shuffle + focal loss (γ=2)": ("ERM", ["optim.sampler=shuffle", "optim.loss=focal"]),
    },
    "alignment": {  # on the imbalance answer; its ERM row is that answer's own runs, trained once
        "CORAL, standardized, weight 0.3 (reference)": ("ERM+Align", [*IMBALANCE_ANSWER]),
        "CORAL, standardized, weight 0.1": ("ERM+Align", [*IMBALANCE_ANSWER, "align.weight=0.1"]),
        "CORAL, standardized, weight 1": ("ERM+Align", [*IMBALANCE_ANSWER, "align.weight=1.0"]),
        "CORAL, raw embedding, weight 10 (before)": ("ERM+Align", [*IMBALANCE_ANSWER, "align.normalize=none",
                                                                   "align.weight=10.0"]),
        "class-conditional MMD, standardized, weight 0.3": ("ERM+Align", [*IMBALANCE_ANSWER, "align.kind=mmd"]),
        "no alignment (ERM)": ("ERM", [*IMBALANCE_ANSWER]),
    },
}


def variant_slug(arm: str, overrides: list[str]) -> str:
    """One name per distinct training, so variants shared between questions train once."""
    text = "-".join([arm, *overrides]) if overrides else arm
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def plan(seeds: int, questions: list[str] | None = None) -> list[tuple[str, list[str], int]]:
    """Question by question (all, or ``questions`` in their order): the default at every seed, then
    each variant at every seed."""
    groups = [list(QUESTIONS[q].values()) for q in (questions or QUESTIONS)]
    return [(arm, overrides, seed) for (arm, overrides), seed in by_question(groups, seeds)]


def run_plan(args: argparse.Namespace) -> None:
    code = git_state(REPO)
    for arm, overrides, seed in plan(args.seeds, args.questions):
        name = f"{variant_slug(arm, overrides)}-s{seed}"
        result = args.results / f"{name}.json"
        out = args.runs / name
        # BASE_CONFIG, the recipe the questions began with, in a file of its own: a default that moves
        # with a shipped model must move neither the rows' base nor the digests of committed results.
        cmd = [sys.executable, "-m", "training.train", "--config", BASE_CONFIG, f"run.out={out}", f"run.seed={seed}",
               f"optim.epochs={args.epochs}", "run.tta=none", "run.progress=false", "data.split=holdout",
               *ARMS[arm], *overrides, *args.extra]
        seconds = train_planned(result, out, cmd, name, args.dry_run)
        if seconds is None:
            continue
        labels = {"variant": variant_slug(arm, overrides), "arm": arm, "overrides": overrides, "seed": seed}
        write_json_atomic(result, raw_result(out, labels, code, seconds), nan_as_null=True)
        write_table(args.results)
        if args.commit:
            commit_files([result, *outputs(args.results)], f"choices: {name}")


def _row(question: str, name: str, records: list[dict[str, Any]], default: list[dict[str, Any]]) -> str:
    auc = [r["student"]["val"]["roc_auc"] for r in records]
    ba = [r["student"]["val"]["balanced_accuracy"] for r in records]
    return (f"| {question} | {name} | {len(records)} | {fmt(auc)} | {fmt(ba)} | "
            f"{val_auc_against_default(records, default)} |")


def strength_table(by: dict[str, list[dict[str, Any]]]) -> str:
    """What each alignment row's term did, beside what it scored: the term's loss and the gradient it
    sent into the backbone's last stage relative to the supervised term's (logged by training)."""
    lines = ["| alignment variant | runs | align loss (mean over steps) | gradient share at the last stage (mean) "
             "| in the last epoch | val AUC |", "|---|---|---|---|---|---|"]
    for name, (arm, overrides) in QUESTIONS["alignment"].items():
        rs = by.get(variant_slug(arm, overrides), [])
        terms = [r["terms"]["align"] for r in rs if "align" in r.get("terms", {})]
        share = [t["grad_share_mean"] for t in terms] if arm != "ERM" else [0.0] * len(rs)
        last = [t["grad_share_last_epoch"] for t in terms] if arm != "ERM" else [0.0] * len(rs)
        lines.append(f"| {name} | {len(rs)} | {fmt([t['loss_mean'] for t in terms]) if arm != 'ERM' else 'off'} | "
                     f"{fmt(share)} | {fmt(last)} | {fmt([r['student']['val']['roc_auc'] for r in rs])} |")
    return "\n".join(lines)


def plot_strength(by: dict[str, list[dict[str, Any]]], out: Path) -> Path:
    """Validation AUC against the alignment term's gradient share, one point per run, ERM at zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (name, (arm, overrides)), marker in zip(QUESTIONS["alignment"].items(), "osD^vx", strict=False):
        rs = by.get(variant_slug(arm, overrides), [])
        xs = [0.0 if arm == "ERM" else r["terms"]["align"]["grad_share_mean"] for r in rs]
        if rs:
            ax.scatter(xs, [r["student"]["val"]["roc_auc"] for r in rs], marker=marker, s=46, label=name)
    ax.set_xlabel("alignment gradient share at the last stage (mean over steps)")
    ax.set_ylabel("validation AUC (in-domain)")
    ax.set_title("Alignment strength against in-domain validation AUC, one point per run", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.collections:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no alignment runs yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def outputs(results: Path) -> list[Path]:
    return [results.parent / "choices.md", results.parent / "choices_alignment.png"]


def write_table(results: Path) -> str:
    records = load_results(results)
    by = grouped(records, lambda r: r["variant"])
    rows = []
    for question, variants in QUESTIONS.items():
        default = by.get(variant_slug(*next(iter(variants.values()))), [])
        for name, (arm, overrides) in variants.items():
            rows.append(_row(question, name, by.get(variant_slug(arm, overrides), []), default))
    text = "\n".join([
        "# Design choices, picked on in-domain validation (AMi-Br)", "",
        f"Generated by `python -m benchmarks.choices --table-only` from `{checkout_relative(results)}/*.json`; "
        "do not edit by hand.", "",
        "Each variant: the slide-grouped holdout split of all of AMi-Br, scored on its validation split only "
        f"(never on a held-out domain), last epoch, no TTA. Attention and imbalance rows train with "
        f"`{BASE_CONFIG}` (balanced sampler, CE, the full patch) unless the row says otherwise; alignment "
        "rows build on the imbalance answer, "
        f"`{' '.join(IMBALANCE_ANSWER)}`. Val AUC is the criterion; val BA is at the threshold "
        "picked on the same split, so it is optimistic. Mean ± sd over seeds (¹ one seed). " + VAL_AUC_RULE, "",
        "| question | variant | runs | val AUC | val BA | against the reference (val AUC) |",
        "|---|---|---|---|---|---|", *rows, "",
        "## Alignment strength", "",
        "What each alignment row's term did: its loss (before the weight) and the gradient it sent into the "
        "backbone's last stage, relative to the supervised term's (training logs both every 20 steps; mean over "
        "steps, and over the last epoch), beside the validation AUC it scored. The no-alignment row sends none. "
        "One point per run: "
        "[`choices_alignment.png`](choices_alignment.png).", "",
        strength_table(by), "",
        f"Runs: {len(records)}. Code: "
        + (", ".join(sorted({f"{r['code']['commit']}{' (dirty)' if r['code']['dirty'] else ''}" for r in records}))
           or "–") + ".", ""])
    write_text_atomic(results.parent / "choices.md", text)
    plot_strength(by, results.parent / "choices_alignment.png")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=REPO / "runs/choices")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--commit", action="store_true", help="git-commit each raw result as it lands")
    parser.add_argument("--questions", nargs="+", choices=list(QUESTIONS), metavar="QUESTION",
                        help=f"only these questions, in this order (default all: {', '.join(QUESTIONS)})")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and what is done; train nothing")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra training overrides, e.g. run.threads=2")
    args = parser.parse_intermixed_args(argv)
    return plan_then_tables(args, run_plan, write_table)


if __name__ == "__main__":
    sys.exit(main())
