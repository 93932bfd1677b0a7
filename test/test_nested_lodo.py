"""benchmarks/nested_lodo.py: choosing a recipe across the training domains, never on the held-out one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import held_out
from benchmarks import nested_lodo as nl
from benchmarks.ablation import DOMAINS
from benchmarks.answers import SHIPPED, ablation_results, recipe_slug

TUPAC, XR, S360 = DOMAINS  # the order the tables use


SIGMA = ["augment.hed_sigma=0.2"]
SHIPPED_CONFIG = {"optim": {"sampler": "shuffle", "loss": "weighted_ce", "epochs": 15}, "data": {"center_crop": 64},
                  "augment": {"hed_sigma": 0.05}}
CONFIG = {(): SHIPPED_CONFIG, tuple(SIGMA): {**SHIPPED_CONFIG, "augment": {"hed_sigma": 0.2}}}


def config(change: list[str], **data: str) -> dict:
    """The recipe's settings as a record keeps them, with where the run went (never part of its name)."""
    c = CONFIG[tuple(change)]
    return {**c, "data": {**c["data"], "split": "lodo", **data}, "run": {"seed": 0, "out": "runs/x"}}


def inner_run(results: Path, change: list[str], trained_on: str, seed: int, ba: dict[str, float]) -> None:
    """A raw result: trained on one domain, with its BA (and AUC = BA + 0.1) on each other domain."""
    rec = {"recipe": nl.recipe_name(change), "change": change, "trained_on": trained_on, "seed": seed,
           "code": {"commit": "abc1234def"}, "config": config(change, lodo_value="elsewhere"),
           "scored_on": {d: {"balanced_accuracy": v, "roc_auc": v + 0.1} for d, v in ba.items()}}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{nl.run_name(change, trained_on, seed)}.json").write_text(json.dumps(rec))


def outer_run(root: Path, change: list[str], dom: str, seed: int, ba: float) -> None:
    """The recipe's held-out Full arm on ``dom`` (the leave-one-domain-out ablation's record)."""
    folder = root / ablation_results([*SHIPPED, *change])
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"arm": "Full", "held_out": dom, "seed": seed, "date": f"2026-12-0{1 + len(change)}T00:00:00Z",
           "code": {"commit": "abc1234def"}, "config": config(change, lodo_value=dom),
           "student": {"test": {"balanced_accuracy": ba, "roc_auc": ba + 0.08}, "val": {"roc_auc": 0.86}}}
    (folder / f"full-{dom.replace(' ', '-')}-s{seed}.json").write_text(json.dumps(rec))


def study(root: Path, seeds: int = 2) -> Path:
    """The shipped recipe and one candidate. Trained on one domain, the candidate carries to XR and S360
    from each other (+0.05, beyond the spread) but not between TUPAC16 and the others (equal): it is
    picked for TUPAC16 held out, and not for XR or S360. Held out it is better on TUPAC16 and S360."""
    results = root / "benchmarks/results/nested_lodo"
    for seed in range(seeds):
        e = 0.01 * seed
        for change, lift in (([], 0.0), (SIGMA, 0.05)):
            inner_run(results, change, TUPAC, seed, {XR: 0.70 + e, S360: 0.72 + e})
            inner_run(results, change, XR, seed, {TUPAC: 0.66 + e, S360: 0.75 + e + lift})
            inner_run(results, change, S360, seed, {TUPAC: 0.68 + e, XR: 0.77 + e + lift})
            for dom, ba in ((TUPAC, 0.77), (XR, 0.82), (S360, 0.77)):
                outer_run(root, change, dom, seed, ba + e + (0.0 if dom == XR else lift / 2))
    return results


def test_a_run_trains_on_one_domain_and_holds_out_the_two_others() -> None:
    cmd = nl.train_command(Path("runs/x"), SIGMA, XR, 1, 15, ["run.threads=2"])
    assert "data.lodo_column=Scanner" in cmd and "data.lodo_value=unknown,Hamamatsu S360" in cmd  # TUPAC16: unknown
    assert cmd[-len(SHIPPED) - 2:] == [*SHIPPED, *SIGMA, "run.threads=2"]
    assert {"mix.enabled=true", "align.enabled=true", "distil.enabled=true", "run.seed=1"} <= set(cmd)
    assert nl.plan([[], SIGMA], 2)[:4] == [([], TUPAC, 0), ([], XR, 0), ([], S360, 0), (SIGMA, TUPAC, 0)]


def test_the_inner_score_of_a_held_out_domain_never_uses_a_run_that_saw_it(tmp_path: Path) -> None:
    recipes = nl.gather(study(tmp_path))
    shipped = recipes[0]
    assert shipped["recipe"] == "reference"
    # TUPAC16 held out: trained on XR scored on S360 and the reverse, per seed
    assert nl.inner_scores(shipped["runs"], TUPAC, "balanced_accuracy") == pytest.approx([0.76, 0.77])
    # XR held out: TUPAC16 -> S360 (0.72) and S360 -> TUPAC16 (0.68)
    assert nl.inner_scores(shipped["runs"], XR, "balanced_accuracy") == pytest.approx([0.70, 0.71])
    assert nl.inner_scores(shipped["runs"], XR, "roc_auc") == pytest.approx([0.80, 0.81])
    assert recipes[1]["outer"][TUPAC]["balanced_accuracy"] == pytest.approx(0.800)


def test_the_pick_follows_the_house_rule_per_held_out_domain(tmp_path: Path) -> None:
    chosen = nl.picks(nl.gather(study(tmp_path)))
    assert chosen[TUPAC]["pick"] == "augment.hed_sigma=0.2" and chosen[TUPAC]["calls"][SIGMA[0]] == "+0.050 higher"
    assert chosen[XR]["pick"] == chosen[S360]["pick"] == "reference"  # +0.000: no difference keeps the reference
    assert chosen[XR]["calls"][SIGMA[0]].endswith("no difference")


def test_one_seed_calls_no_pick(tmp_path: Path) -> None:
    recipes = nl.gather(study(tmp_path, seeds=1))
    assert all(c["pick"] is None for c in nl.picks(recipes).values())
    assert "no pick is called" in nl.render(recipes)


def test_table_only_writes_the_page_and_its_figure_from_the_raw_results(tmp_path: Path) -> None:
    results = study(tmp_path)
    assert nl.main(["--table-only", "--results", str(results)]) == 0
    text = (results.parent / "nested_lodo.md").read_text()
    assert "`python -m benchmarks.nested_lodo --table-only`" in text
    assert "| TUPAC16 | augment.hed_sigma=0.2 | 0.815 ± 0.007 | 0.915 ± 0.007 | +0.050 higher | " in text
    assert "**picked**" in text.split("| TUPAC16 | augment.hed_sigma=0.2 |", 1)[1].splitlines()[0]
    # held out: TUPAC16 gains +0.025 by the pick, XR and S360 keep the shipped recipe (+0.000)
    assert "TUPAC16: augment.hed_sigma=0.2 (+0.025, +0.025 higher), Hamamatsu XR: reference (+0.000)" in text
    assert "on the mean over the domains +0.008" in text and text.count(": yes") == 3 and "**Met.**" in text
    assert "| trained on → scored on | reference: BA / AUC | augment.hed_sigma=0.2: BA / AUC |" in text
    assert "| Hamamatsu XR → Hamamatsu S360 | 0.755 ± 0.007 / 0.855 ± 0.007 | 0.805 ± 0.007 / 0.905 ± 0.007 |" in text
    assert "| TUPAC16 → Hamamatsu XR | 0.705 ± 0.007 / 0.805 ± 0.007 | 0.705 ± 0.007 / 0.805 ± 0.007 |" in text
    assert (results.parent / "nested_lodo.png").stat().st_size > 0


def test_a_candidate_one_training_domain_cannot_judge_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        nl.main(["--dry-run", "--candidate", "align.kind=mmd"])
    assert stop.value.code == 2 and "switches off" in capsys.readouterr().err


def test_scores_per_held_out_domain_read_the_run_summary(tmp_path: Path) -> None:
    per = {"balanced_accuracy": 0.7, "roc_auc": 0.8, "sensitivity": 0.6, "specificity": 0.8, "n": 10}
    summary = {"results": {"student": {"test": {"by_label": {"Scanner": {"unknown": per,
                                                                          "Hamamatsu S360": {**per, "n": 5}}}}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert nl.scored_on(tmp_path) == {TUPAC: per, S360: {**per, "n": 5}}


def test_names_and_pairings_stay_when_another_recipe_ships(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = study(tmp_path)
    before = nl.render(nl.gather(results))
    monkeypatch.setattr(held_out, "SHIPPED", [*SHIPPED, *SIGMA])  # the candidate ships
    assert nl.render(nl.gather(results)) == before
    assert nl.run_name([], XR, 0) == f"{recipe_slug(SHIPPED)}-on-hamamatsu-xr-s0"


def test_a_folder_whose_unchanged_runs_trained_two_recipes_is_refused(tmp_path: Path) -> None:
    results = study(tmp_path)
    for path in results.glob("*hed-sigma-0.2*.json"):  # as a study made after a ship would record itself
        path.write_text(json.dumps({**json.loads(path.read_text()), "change": []}))
    with pytest.raises(ValueError, match="more than one recipe"):
        nl.gather(results)


def test_a_pick_worse_held_out_fails_the_rule(tmp_path: Path) -> None:
    results = study(tmp_path)
    for seed in range(2):  # the candidate, picked for TUPAC16, falls well below the reference there
        outer_run(tmp_path, SIGMA, TUPAC, seed, 0.70 + 0.01 * seed)
    text = nl.render(nl.gather(results))
    assert "TUPAC16: augment.hed_sigma=0.2 (-0.070, -0.070 lower)" in text
    assert "beyond the seed spread: no" in text and "**Not met.**" in text


def test_a_study_after_a_ship_has_a_page_of_its_own_named_after_its_folder(tmp_path: Path) -> None:
    first = study(tmp_path)
    later = first.rename(first.with_name("nested_lodo-after-a-ship"))
    assert nl.main(["--table-only", "--results", str(later)]) == 0
    page = later.parent / "nested_lodo-after-a-ship.md"
    assert "`python -m benchmarks.nested_lodo --table-only --results benchmarks/results/nested_lodo-after-a-ship`" \
        in page.read_text()
    assert (later.parent / "nested_lodo-after-a-ship.png").is_file() and not (later.parent / "nested_lodo.md").exists()


def test_a_later_study_borrows_only_runs_that_train_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reference of a study made after a ship was a candidate before: its runs are copied, not retrained."""
    from benchmarks.driver import load_results, planned_config

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    cmd = nl.train_command(Path("runs/x"), [], XR, 0, 15, ["run.threads=2"])
    record = {"recipe": "augment.hed_sigma=0.2", "change": SIGMA, "trained_on": XR, "seed": 0,
              "config": planned_config(cmd).to_dict(), "scored_on": {}}
    (earlier / "a.json").write_text(json.dumps(record))
    lender = load_results(earlier)
    assert nl.borrowable(lender, cmd, XR, 0) == record
    assert nl.borrowable(lender, cmd, XR, 1) is None and nl.borrowable(lender, cmd, S360, 0) is None
    assert nl.borrowable([], cmd, XR, 0) is None
    other = nl.train_command(Path("runs/x"), ["data.stain_norm=reinhard"], XR, 0, 15, ["run.threads=2"])
    assert nl.borrowable(lender, other, XR, 0) is None  # another recipe trains otherwise
    out = tmp_path / "benchmarks/results/nested_lodo-later"
    nl.main(["--dry-run", "--results", str(out), "--borrow-from", str(earlier), "--candidate",
             "data.stain_norm=reinhard", "--seeds", "1", "run.threads=2"])
    planned = capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing
    assert f"borrowed: {nl.run_name([], XR, 0)} from" in planned and planned.count("borrowed:") == 1
    assert f"to run: {nl.run_name(['data.stain_norm=reinhard'], XR, 0)}" in planned


def test_a_run_whose_last_epoch_holds_no_probe_step_records_nan_without_a_warning() -> None:
    """One small domain makes short epochs: the gradient probe (every 20 steps) may miss the last one."""
    import math
    import warnings

    from benchmarks.driver import _term_shares

    rows = [{"epoch": 1, "step": 1, "supervised": 0.7, "distil": 0.1, "grad_share/distil": 0.2},
            {"epoch": 2, "step": 2, "supervised": 0.5, "distil": 0.1}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shares = _term_shares(rows)
    assert shares["distil"]["grad_share_mean"] == pytest.approx(0.2)
    assert math.isnan(shares["distil"]["grad_share_last_epoch"]) and "align" not in shares
