"""benchmarks/lodo_ensemble.py: the shipped recipe's ensemble with a domain left out, set against one
network of the same recipe and against issue #10's goal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_held_out import SHIPPED_CONFIG, record, rows

from benchmarks import lodo_ensemble
from benchmarks.ablation import DOMAINS
from benchmarks.answers import SHIPPED, ablation_results

REPO = Path(__file__).resolve().parents[1]


def scores(ba: float, auc: float) -> dict[str, float]:
    return {"balanced_accuracy": ba, "roc_auc": auc, "sensitivity": 0.8, "specificity": 0.82,
            "predicted_atypical": 0.25, "ece": 0.05, "best_threshold": 0.4, "balanced_accuracy_at_best": ba + 0.01}


def built(root: Path, dom: str, ba: float, auc: float, config: dict | None = None) -> None:
    folder = root / lodo_ensemble.RESULTS / lodo_ensemble.slug(dom)
    folder.mkdir(parents=True)
    held = {"column": "Origin", "value": dom, "patches": 100, "atypical": 21, "threshold": 0.37, "tta": "none",
            "ensemble": scores(ba, auc), "members": [scores(ba - 0.02, auc - 0.01), scores(ba - 0.04, auc - 0.02)]}
    (folder / "ensemble_report.json").write_text(json.dumps({"folds": 2, "held_out": held}))
    fold = {"config": {**(config or SHIPPED_CONFIG), "data": {**(config or SHIPPED_CONFIG)["data"], "fold": 0,
                                                                "lodo_value": dom}},
            "code": {"commit": "abc1234"}}
    (folder / "fold-0.json").write_text(json.dumps(fold))


def checkout(root: Path) -> Path:
    for seed, shift in ((0, 0.0), (1, 0.01)):
        for dom in DOMAINS:
            record(root / ablation_results(SHIPPED), dom, seed, 0.775 + shift, 0.86 + shift, SHIPPED_CONFIG,
                   "2026-12-01T00:00:00Z")
    return root


def test_the_page_sets_each_built_ensemble_against_one_network_and_the_goal(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    text = lodo_ensemble.render(root)
    assert "not measured yet on any domain" in text
    built(root, "TUPAC16", 0.81, 0.885)
    built(root, "Hamamatsu XR", 0.80, 0.8797, {**SHIPPED_CONFIG, "augment": {"hed_sigma": 0.4}})
    text = lodo_ensemble.render(root)
    table = rows(text, "| held out")
    tupac, xr, s360 = (table[d] for d in DOMAINS)
    assert tupac[:5] == ["100 (21)", "0.370", "**0.810 / 0.885**", "0.800 / 0.820", "0.780 / 0.870"]  # members: mean
    assert tupac[5:] == ["0.820", "0.780 / 0.865", "met", "missed (BA 0.780, AUC 0.865)", "shipped"]
    # a miss by less than the rounding shows the fourth place; another recipe is named, not passed as shipped
    assert xr[7] == "missed (AUC 0.8797)" and xr[9] == "`augment.hed_sigma=0.4`"
    assert xr[2] == "**0.800 / 0.8797**"  # not "0.880", which would read as the goal reached
    assert s360[2] == "not measured yet" and s360[8] == "missed (BA 0.780, AUC 0.865)"
    assert ("met on TUPAC16; missed on Hamamatsu XR ((AUC 0.8797)); not measured yet on Hamamatsu S360."
            not in text)  # the verdict's words are tidy
    assert "met on TUPAC16; missed on Hamamatsu XR (AUC 0.8797); not measured yet on Hamamatsu S360." in text
    assert "Ensemble minus one network, BA: TUPAC16 +0.030, Hamamatsu XR +0.020." in text
    assert "code abc1234" in text
    assert "](lodo_ensemble.png)" in text  # the page shows its figure, which write() makes beside it
    written = lodo_ensemble.write(root)
    assert [p.name for p in written] == ["lodo_ensemble.md", "lodo_ensemble.png"]
    assert written[0].read_text() == text and written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_report_without_a_held_out_domain_is_not_a_row(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    folder = root / lodo_ensemble.RESULTS / "tupac16"
    folder.mkdir(parents=True)
    (folder / "ensemble_report.json").write_text(json.dumps({"folds": 5}))
    assert lodo_ensemble.gather(root / lodo_ensemble.RESULTS) == {}


def test_the_queue_plan_leaves_each_ablation_domain_out_tupac16_first() -> None:
    lines = [line.split("\t") for line in lodo_ensemble.plan_lines()]
    assert [(column, value) for _, column, value, _ in lines] == list(DOMAINS.values())
    assert lines[0][0] == "tupac16" and all(int(minutes) > 0 for *_, minutes in lines)
    dry = subprocess.run(["bash", str(REPO / "benchmarks/cpu_plan.sh"), "lodo-ensemble"], capture_output=True,
                         text=True, env={"CPU_PLAN_DRY": "1", "PATH": "/usr/bin:/bin",
                                         "CPU_PLAN_RUNS": "/nonexistent/runs"}, cwd=REPO, timeout=120)
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if "training.ensemble" in line]
    assert len(commands) == 3 - sum((REPO / lodo_ensemble.RESULTS / s / "ensemble_report.json").is_file()
                                    for s in ("tupac16", "hamamatsu-xr", "hamamatsu-s360"))
    for line in commands:
        assert "--folds 5" in line and "data.lodo_column=" in line and "data.center_crop=64" in line


def test_the_committed_page_is_what_its_records_make() -> None:
    committed = (REPO / lodo_ensemble.TABLE).read_text()
    assert committed == lodo_ensemble.render(REPO), "run python -m benchmarks.lodo_ensemble"


def test_the_model_card_shows_the_ensemble_held_out_and_where_its_recipe_differs(tmp_path: Path) -> None:
    from benchmarks.model_card import ensemble_held_out_section

    root = checkout(tmp_path)
    shipped = {**SHIPPED_CONFIG, "augment": {"hed_sigma": 0.2}}
    card = {"provenance": {"config": shipped}}
    records = [json.loads(p.read_text()) for p in (root / ablation_results(SHIPPED)).glob("*.json")]
    assert "Not measured yet" in ensemble_held_out_section(card, {}, records, "x")[0]
    built(root, "TUPAC16", 0.81, 0.885, shipped)
    text = "\n".join(ensemble_held_out_section(card, lodo_ensemble.gather(root / lodo_ensemble.RESULTS), records,
                                               "x"))
    assert "| TUPAC16 (100 patches) | 0.810 | 0.800 | 0.820 | 0.885 | 0.780 | met |" in text
    assert "met on TUPAC16; not measured yet on Hamamatsu XR, Hamamatsu S360." in text
    assert "differ from this card: none." in text
    other = {**SHIPPED_CONFIG, "augment": {"hed_sigma": 0.4}}
    text = "\n".join(ensemble_held_out_section({"provenance": {"config": other}},
                                               lodo_ensemble.gather(root / lodo_ensemble.RESULTS), records, "x"))
    assert "differ from this card: none." not in text and "hed_sigma" in text
