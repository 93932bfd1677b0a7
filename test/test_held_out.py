"""benchmarks/held_out.py: every recipe's Full arm held out, side by side, named by what it changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import held_out
from benchmarks.ablation import DOMAINS
from benchmarks.answers import SHIPPED, ablation_results

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = {"optim": {"sampler": "shuffle", "loss": "weighted_ce"}, "data": {"center_crop": 64}}


def record(folder: Path, dom: str, seed: int, ba: float, auc: float, config: dict[str, Any], date: str,
           val_auc: float = 0.85) -> None:
    run = {"lodo_value": dom, "split": "lodo", "fold": 0}  # where the run went: never part of a recipe's name
    rec = {"arm": "Full", "held_out": dom, "seed": seed, "date": date, "code": {"commit": "abc1234", "dirty": False},
           "config": {**config, "data": {**config.get("data", {}), **run}, "run": {"out": f"runs/{seed}"}},
           "student": {"test": {"balanced_accuracy": ba, "roc_auc": auc}, "val": {"roc_auc": val_auc}}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"full-{dom.lower().replace(' ', '-')}-s{seed}.json").write_text(json.dumps(rec))


def checkout(root: Path) -> Path:
    """A checkout with the shipped recipe, the first model's (runs from before data.center_crop existed),
    and a candidate with one domain done and its seed pairs' check."""
    results = root / "benchmarks/results"
    candidate = {**SHIPPED_CONFIG, "augment": {"hed_sigma": 0.2}}
    for seed, shift in ((0, 0.0), (1, 0.01)):
        for dom in DOMAINS:
            record(root / ablation_results(SHIPPED), dom, seed, 0.78 + shift, 0.87 + shift, SHIPPED_CONFIG,
                   "2026-11-29T00:00:00Z")
            record(results / "ablation", dom, seed, 0.74 + shift, 0.85 + shift,
                   {"optim": {"sampler": "balanced", "loss": "ce"}}, "2026-11-26T00:00:00Z")
        record(results / "ablation-hed/ablation", "TUPAC16", seed, 0.81 + shift, 0.89 + shift, candidate,
               "2026-12-07T00:00:00Z", val_auc=0.80 + shift)
    pair = {"arm": "Full", "held_out": "TUPAC16", "average": {"balanced_accuracy": 0.83, "roc_auc": 0.90}}
    erm_pair = {**pair, "arm": "ERM", "average": {"balanced_accuracy": 0.5, "roc_auc": 0.5}}
    (results / "ablation-hed/threshold_transfer.json").write_text(json.dumps({"rows": [erm_pair, pair]}))
    return root


def rows(text: str, heading: str) -> dict[str, list[str]]:
    part = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")]
                                              for line in part.splitlines() if line.startswith("| "))}


def test_every_recipe_is_a_row_named_by_what_it_changes_against_the_shipped_one(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    written = held_out.write(root)
    assert [p.name for p in written] == ["held_out.md", "held_out.png"] and written[1].stat().st_size > 0
    text = written[0].read_text()
    one = rows(text, "## One network")
    # the shipped recipe first, then the others by their first run; older runs' missing crop is the base's
    assert list(one)[1:] == ["the shipped recipe",
                             "the first model's recipe (data.center_crop=0 optim.sampler=balanced optim.loss=ce)",
                             "shipped, augment.hed_sigma=0.2"]
    shipped, first, candidate = (one[k] for k in list(one)[1:])
    assert shipped[0] == "6" and shipped[4] == "0.785 / 0.875" and shipped[5] == ""
    assert shipped[6] == "0 of 3" and shipped[7] == "0.850 ± 0.000"
    assert first[4] == "0.745 / 0.855" and first[5] == "-0.040 lower"
    # one domain run: its cells, no mean and no call, and the goal says what was not run
    assert candidate[:5] == ["2", "0.815 ± 0.007 / 0.895 ± 0.007", "– / –", "– / –", "incomplete"]
    assert candidate[5] == "–" and candidate[6] == "1 of 3 (TUPAC16); 2 not run" and candidate[7] == "0.805 ± 0.007"
    two = rows(text, "## Two networks averaged")
    assert list(two)[1:] == ["shipped, augment.hed_sigma=0.2"]  # only recipes with a measured pair, Full only
    assert two["shipped, augment.hed_sigma=0.2"] == ["0.830 / 0.900", "–", "–", "incomplete",
                                                     "1 of 3 (TUPAC16); 2 not run"]


def test_where_a_run_went_never_names_a_recipe() -> None:
    base = {"data": {"center_crop": 0, "split": "holdout"}, "optim": {"lr": 1e-3}, "run": {"seed": 0}}
    moved = {"data": {"center_crop": 0, "split": "lodo", "lodo_value": "TUPAC16"}, "run": {"seed": 1, "out": "x"},
             "mix": {"enabled": False}}
    assert held_out.recipe_change(moved, base) == []
    assert held_out.recipe_change({"optim": {"lr": 0.01}}, base) == ["optim.lr=0.01"]
    assert held_out.recipe_change({"data": {"stages": ["a", "b"]}}, {"data": {"stages": ["a"]}}) == [
        "data.stages=[a,b]"]


def test_the_committed_page_is_what_the_committed_results_make(tmp_path: Path) -> None:
    committed = (REPO / "benchmarks/results/held_out.md").read_text()
    assert committed == held_out.render(held_out.gather(REPO)), "run python -m benchmarks.held_out"
