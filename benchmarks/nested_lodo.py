"""Choosing a recipe by how it carries across the training domains, checked on a domain it never saw:
leave-one-domain-out validation nested inside the held-out test (DomainBed's "leave-one-domain-out
cross-validation" model selection, with the outer domain kept out of the choice).

    python -m benchmarks.nested_lodo --commit          # train what is missing (resumable), commit each result
    python -m benchmarks.nested_lodo --table-only      # regenerate nested_lodo.md and .png from the raw results
    python -m benchmarks.nested_lodo --dry-run         # the plan and what is done; train nothing
    python -m benchmarks.nested_lodo --candidate augment.hed_sigma=0.2   # only the shipped recipe and this change
    python -m benchmarks.nested_lodo --candidate data.stain_norm=reinhard \
        --results benchmarks/results/nested_lodo-<shipped slug> --borrow-from benchmarks/results/nested_lodo
                                                        # after a ship: a study of its own, reusing equal runs

Why: in-domain validation (a slide-grouped split of the training domains) cannot rank the shipped recipe
against its stain-jitter variants, while held out they part by 0.02 BA (``benchmarks/results/held_out.md``);
and a held-out AMi-Br domain may never choose, since it is the test. Nested, it need not: for a test domain
D, each recipe is trained on one of the two other domains alone and scored on the remaining one, both ways;
that inner score sees nothing of D. The pick for D is the reference (the recipe shipped when the runs were
made) unless a candidate's inner BA is higher beyond the seed spread (the house rule,
``benchmarks.spread.against``), then the best such one. Its
outer score is the recipe's leave-one-domain-out Full arm held out on D (``benchmarks.ablation``, already
measured), so the table says whether this way of choosing would have chosen well, domain by domain.

Each run trains the Full recipe on one domain (``data.split=lodo`` holding out the two others by Scanner,
TUPAC16's being unrecorded) and is scored on each held-out domain at the threshold from its own domain's
validation split, as the held-out ablation scores. One run serves two outer domains (trained on XR and
scored on S360 is inner evidence for TUPAC16; scored on TUPAC16, for S360). With one domain to train on,
the alignment has no weak label that varies and switches itself off, so this cannot judge the alignment's
settings: a candidate changing only those is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from amf.atomic import write_json_atomic, write_text_atomic
from amf.provenance import git_state
from benchmarks import held_out
from benchmarks.ablation import ARMS, DOMAINS, slug
from benchmarks.answers import BASE_CONFIG, SHIPPED, recipe_slug
from benchmarks.driver import (
    EPOCHS,
    REPO,
    checkout_relative,
    commit_files,
    grouped,
    load_results,
    plan_then_tables,
    planned_config,
    raw_result,
    train_planned,
)
from benchmarks.goals import domain_means
from benchmarks.spread import against, fmt, mean_sd
from training.config import acting_digest

RESULTS = REPO / "benchmarks/results/nested_lodo"  # the first study's; one made after a ship takes its own
# Each domain by its Scanner value: TUPAC16 records none, which the split reads as "unknown".
SCANNER = {"TUPAC16": "unknown", "Hamamatsu XR": "Hamamatsu XR", "Hamamatsu S360": "Hamamatsu S360"}
# The changes whose held-out Full arm is measured and that a single training domain can tell apart.
CANDIDATES = ["augment.hed_sigma=0.2", "augment.hed_sigma=0.4"]
METRICS = ("balanced_accuracy", "roc_auc")
REFERENCE = "reference"  # the recipe shipped when the runs were made, which the candidates change


def others(dom: str) -> list[str]:
    return [d for d in DOMAINS if d != dom]


def recipe_name(change: list[str]) -> str:
    return " ".join(change) or REFERENCE


def run_name(change: list[str], trained_on: str, seed: int) -> str:
    """By the whole recipe (SHIPPED with the change), so that a later ship never gives a name to other settings."""
    return f"{recipe_slug([*SHIPPED, *change])}-on-{slug(trained_on)}-s{seed}"


def plan(changes: list[list[str]], seeds: int) -> list[tuple[list[str], str, int]]:
    """Seed by seed, every recipe on every domain: a budget cut short leaves whole seeds."""
    return [(change, dom, seed) for seed in range(seeds) for change in changes for dom in DOMAINS]


def train_command(out: Path, change: list[str], trained_on: str, seed: int, epochs: int, extra: list[str],
                  config: str = BASE_CONFIG) -> list[str]:
    held = ",".join(SCANNER[d] for d in others(trained_on))
    return [sys.executable, "-m", "training.train", "--config", config, f"run.out={out}", f"run.seed={seed}",
            f"optim.epochs={epochs}", "run.tta=none", "run.progress=false", "data.split=lodo",
            "data.lodo_column=Scanner", f"data.lodo_value={held}", *ARMS["Full"], *SHIPPED, *change, *extra]


def scored_on(run: Path) -> dict[str, dict[str, float]]:
    """The student's metrics on each held-out domain, at its own validation threshold."""
    by = json.loads((run / "summary.json").read_text())["results"]["student"]["test"]["by_label"]["Scanner"]
    return {dom: {k: by[value][k] for k in (*METRICS, "sensitivity", "specificity", "n")}
            for dom, value in SCANNER.items() if value in by}


def run_plan(args: argparse.Namespace) -> None:
    code = git_state(REPO)
    lender = load_results(args.borrow_from) if args.borrow_from else []  # read once, not per planned run
    for change, dom, seed in plan(args.changes, args.seeds):
        name = run_name(change, dom, seed)
        out, result = args.runs / name, args.results / f"{name}.json"
        cmd = train_command(out, change, dom, seed, args.epochs, args.extra, args.config)
        labels = {"recipe": recipe_name(change), "change": change}
        message = f"nested_lodo: {recipe_name(change)} trained on {dom} seed {seed}"
        found = None if result.is_file() else borrowable(lender, cmd, dom, seed)
        if found is not None:
            where = checkout_relative(args.borrow_from)
            print(f"borrowed: {name} from {where} (trains alike)", flush=True)
            if args.dry_run:
                continue
            record, message = {**found, **labels, "borrowed_from": str(where)}, f"{message}, borrowed from {where}"
        else:
            seconds = train_planned(result, out, cmd, name, args.dry_run)
            if seconds is None:
                continue
            record = raw_result(out, {**labels, "trained_on": dom, "seed": seed}, code, seconds)
            record["scored_on"] = scored_on(out)
        write_json_atomic(result, record, nan_as_null=True)
        written = write_outputs(args.results)
        if args.commit:
            commit_files([result, *written], message)


def borrowable(lender: list[dict[str, Any]], cmd: list[str], trained_on: str, seed: int) -> dict[str, Any] | None:
    """A finished run of another study (``lender``, its raw results) that trains exactly as this planned
    one (equal acting digests): the recipe a later study sets its candidates against was often a candidate
    of an earlier one, and its runs need not train twice."""
    if not lender:
        return None
    planned = acting_digest(planned_config(cmd).to_dict())
    return next((r for r in lender if r["trained_on"] == trained_on and r["seed"] == seed
                 and acting_digest(r["config"]) == planned), None)


# -- tables ---------------------------------------------------------------------------------------
def inner_scores(records: list[dict[str, Any]], outer: str, key: str) -> list[float]:
    """Per seed, the mean of the two runs that never touch ``outer``: trained on each other domain and
    scored on the remaining one. A seed lacking either run is left out."""
    a, b = others(outer)
    values = []
    for _, runs in sorted(grouped(records, lambda r: r["seed"]).items()):
        by = {r["trained_on"]: r["scored_on"] for r in runs}
        if a in by and b in by and b in by[a] and a in by[b]:
            values.append((by[a][b][key] + by[b][a][key]) / 2)
    return values


def gather(results: Path) -> list[dict[str, Any]]:
    """Per recipe (the reference first, then by name): its runs and its held-out Full arm per domain.
    The reference is the recipe the runs without a change trained: the one shipped when they ran. The
    others are named by how their settings differ from it (``benchmarks.held_out.recipe_change``), read
    from each record's own config, and paired by the same settings with a held-out arm, so that a later
    ship changes neither a name nor a pairing. ``results`` is ``<checkout>/benchmarks/results/nested_lodo``;
    the held-out arms are that checkout's ablation folders."""
    records = load_results(results)
    base = [r for r in records if not r["change"]]
    if not base:
        raise ValueError(f"no run of the reference recipe (no change) in {results}: nothing to set candidates against")
    reference = base[0]["config"]
    if any(held_out.recipe_change(r["config"], reference) for r in base):
        raise ValueError(f"the runs without a change in {results} trained more than one recipe; a study made "
                         "after a ship takes a --results folder of its own")
    recipes = grouped(records, lambda r: tuple(held_out.recipe_change(r["config"], reference)))
    arms = {tuple(held_out.recipe_change(h["full"][0]["config"], reference)): h["full"]
            for h in held_out.gather(results.parents[2])}
    return [{"recipe": " ".join(change) or REFERENCE, "runs": recipes[change], "full": arms.get(change, []),
             "outer": domain_means(arms.get(change, []))}
            for change in sorted(recipes, key=lambda c: (bool(c), c))]


def picks(recipes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per outer domain: each recipe's inner BA call against the reference's, and the pick."""
    shipped = next((r for r in recipes if r["recipe"] == REFERENCE), None)
    out: dict[str, dict[str, Any]] = {}
    for dom in DOMAINS:
        inner = {r["recipe"]: inner_scores(r["runs"], dom, "balanced_accuracy") for r in recipes}
        base = inner.get(REFERENCE, [])
        calls = {name: against(values, base, "the reference") for name, values in inner.items() if name != REFERENCE}
        higher = [r for r in recipes if calls.get(r["recipe"], "").endswith(" higher")]
        best = max(higher, key=lambda r: mean_sd(inner[r["recipe"]])[0], default=shipped)
        complete = len(base) >= 2 and all(len(values) >= 2 for values in inner.values())
        out[dom] = {"calls": calls, "pick": best["recipe"] if best and complete else None}
    return out


def _cell(m: dict[str, float] | None) -> str:
    return f"{m['balanced_accuracy']:.3f} / {m['roc_auc']:.3f}" if m else "–"


def direction_table(recipes: list[dict[str, Any]]) -> str:
    """One row per way across (trained on one domain, scored on another), one column per recipe."""
    lines = ["| trained on → scored on | " + " | ".join(f"{r['recipe']}: BA / AUC" for r in recipes) + " |",
             "|---|" + "---|" * len(recipes)]
    for a, b in [(src, dst) for src in DOMAINS for dst in others(src)]:
        cells = []
        for r in recipes:
            scores = [x["scored_on"][b] for x in r["runs"] if x["trained_on"] == a and b in x["scored_on"]]
            cells.append(" / ".join(fmt([m[k] for m in scores]) for k in METRICS) if scores else "–")
        lines.append(f"| {a} → {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def outer_table(recipes: list[dict[str, Any]], chosen: dict[str, dict[str, Any]]) -> str:
    lines = ["| held-out domain | recipe | inner BA (the other two, both ways) | inner AUC | inner BA against the "
             "reference | held-out BA / AUC (Full arm) | picked |", "|---|---|---|---|---|---|---|"]
    for dom in DOMAINS:
        for r in recipes:
            pick = chosen[dom]["pick"]
            mark = "**picked**" if pick == r["recipe"] else ("–" if pick is None else "")
            lines.append(f"| {dom} | {r['recipe']} | {fmt(inner_scores(r['runs'], dom, 'balanced_accuracy'))} | "
                         f"{fmt(inner_scores(r['runs'], dom, 'roc_auc'))} | "
                         f"{chosen[dom]['calls'].get(r['recipe'], '')} "
                         f"| {_cell(r['outer'].get(dom))} | {mark} |")
    return "\n".join(lines)


def verdict(recipes: list[dict[str, Any]], chosen: dict[str, dict[str, Any]]) -> str:
    """The picks held out, and the rule written down before the runs (benchmarks/README.md): a candidate picked for at
    least one domain, no pick lower held out than the reference beyond the seed spread, and the picks'
    mean held-out BA above the reference's."""
    by = {r["recipe"]: r for r in recipes}
    if REFERENCE not in by or any(c["pick"] is None for c in chosen.values()):
        return "**The picks.** Not every outer domain has both seeds of every recipe yet: no pick is called."
    ref = by[REFERENCE]
    if any(dom not in by[c["pick"]]["outer"] or dom not in ref["outer"] for dom, c in chosen.items()):
        return "**The picks.** A picked or the reference recipe lacks its held-out Full arm on some domain: no verdict."
    gain = {dom: by[c["pick"]]["outer"][dom]["balanced_accuracy"] - ref["outer"][dom]["balanced_accuracy"]
            for dom, c in chosen.items()}
    def seeds(recipe: dict[str, Any], dom: str) -> list[float]:
        return [r["student"]["test"]["balanced_accuracy"] for r in recipe["full"] if r["held_out"] == dom]

    calls = {dom: against(seeds(by[c["pick"]], dom), seeds(ref, dom), "the reference")
             for dom, c in chosen.items() if c["pick"] != REFERENCE}
    mean_gain = float(np.mean(list(gain.values())))
    rule = {"a candidate is picked for at least one held-out domain": bool(calls),
            "no pick scores lower held out than the reference beyond the seed spread":
                not any(c.endswith(" lower") for c in calls.values()),
            "the picks' mean held-out BA is above the reference's": mean_gain > 0}
    words = ", ".join(f"{dom}: {chosen[dom]['pick']} ({gain[dom]:+.3f}" + (f", {calls[dom]}" if dom in calls else "")
                      + ")" for dom in DOMAINS)
    return (f"**The picks.** Per held-out domain, with its held-out BA against the reference recipe's: {words}; "
            f"on the mean over the domains {mean_gain:+.3f}. No held-out domain took part in its own pick. "
            "The rule written before the runs: " + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in rule.items())
            + f". **{'Met' if all(rule.values()) else 'Not met'}.**")


def render(recipes: list[dict[str, Any]], results: Path = RESULTS) -> str:
    chosen = picks(recipes)
    runs = [x for r in recipes for x in r["runs"]]
    commits = sorted({x["code"]["commit"] for x in runs})
    epochs = sorted({x["config"]["optim"]["epochs"] for x in runs})
    return "\n".join([
        "# Choosing across the training domains, checked on the held-out one",
        "",
        "Generated by `python -m benchmarks.nested_lodo --table-only"
        + ("" if results.name == RESULTS.name else f" --results benchmarks/results/{results.name}")
        + f"` from the raw results in `benchmarks/results/{results.name}/` and the recipes' leave-one-domain-out "
        "ablation folders; do not edit by hand.",
        "",
        f"Each run trains the Full recipe on one AMi-Br domain alone ({', '.join(map(str, epochs))} epochs) and is "
        "scored on each other domain at the threshold from its own domain's validation split. For a held-out "
        "domain, a recipe's inner score is, per seed, the mean of the two runs among the other domains (trained "
        "on one, scored on the other, both ways); the pick is the reference recipe (the one shipped when the runs "
        "were made) unless a candidate's inner BA "
        "is higher beyond the seed spread, then the best such candidate. The held-out column is the recipe's "
        "Full arm trained on both other domains and scored on this one (`benchmarks/results/ablation-*/`), "
        "which no pick saw.",
        "",
        "## Trained on one domain, scored on another",
        "",
        direction_table(recipes),
        "",
        "## The pick per held-out domain",
        "",
        outer_table(recipes, chosen),
        "",
        verdict(recipes, chosen),
        "",
        f"{len(runs)} runs; code {', '.join(c[:7] for c in commits)}. Mean ± sd over seeds; ¹ one seed.",
        "",
    ])


def plot(recipes: list[dict[str, Any]], out: Path) -> None:
    """Inner BA against held-out BA, one point per recipe and held-out domain: does the inner score rank
    the recipes as the held-out domain does?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    markers = dict(zip(DOMAINS, "os^", strict=True))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for dom in DOMAINS:
        points = []
        for i, r in enumerate(recipes):
            inner, outer = mean_sd(inner_scores(r["runs"], dom, "balanced_accuracy"))[0], r["outer"].get(dom)
            if outer is None or math.isnan(inner):
                continue
            points.append((inner, outer["balanced_accuracy"]))
            ax.scatter(*points[-1], marker=markers[dom], color=colours[i % len(colours)], s=60, zorder=2,
                       label=f"{r['recipe']}, {dom}")
        if len(points) > 1:  # one domain's recipes joined: a line rising to the right ranks them alike
            ax.plot(*zip(*points, strict=True), color="0.75", lw=0.8, zorder=1)
    ax.set_xlabel("inner BA: trained on one other domain, scored on the other (mean of both ways)")
    ax.set_ylabel("held-out BA: Full arm trained on both others")
    ax.set_title("Does choosing across training domains carry to the held-out one?")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def outputs(results: Path) -> list[Path]:
    """The page and figure of the study whose raw results are in ``results``: named after that folder."""
    return [results.parent / f"{results.name}{ext}" for ext in (".md", ".png")]


def write_outputs(results: Path) -> list[Path]:
    recipes = gather(results)
    md, png = outputs(results)
    write_text_atomic(md, render(recipes, results))
    plot(recipes, png)
    return [md, png]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=BASE_CONFIG, help="the config SHIPPED and the candidates apply to")
    parser.add_argument("--candidate", dest="candidates", action="append", metavar="'KEY=VALUE ...'",
                        help="a change to the shipped recipe; repeat for more (default: "
                             f"{', '.join(CANDIDATES)})")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=REPO / "runs/nested_lodo", help="run folders (checkpoints)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the raw JSONs go")
    parser.add_argument("--borrow-from", type=Path, help="another study's raw results: a run here that trains "
                        "exactly as one there is copied from it, not trained again")
    parser.add_argument("--commit", action="store_true", help="git-commit each raw result as it lands")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and what is done; train nothing")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra training overrides, e.g. run.threads=2")
    args = parser.parse_intermixed_args(argv)
    args.changes = [[], *[c.split() for c in (args.candidates or CANDIDATES)]]
    for change in args.changes:
        if change and all(c.startswith("align.") for c in change):
            parser.error(f"{' '.join(change)} changes only the alignment, which one training domain switches off")
        if any("=" not in c for c in change):
            parser.error(f"a candidate is KEY=VALUE words, not {' '.join(change)!r}")
    return plan_then_tables(args, run_plan, _write_and_read)


def _write_and_read(results: Path) -> str:
    write_outputs(results)
    return outputs(results)[0].read_text()


if __name__ == "__main__":
    sys.exit(main())
