"""benchmarks/threshold_transfer.py: the ensemble's fitting rule where every member left the test domain out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score

from amf.metrics import best_threshold
from benchmarks import threshold_transfer as tt
from training.calibration import choose_calibration, member_probs


def _member(rng: np.random.Generator, shift: float, test_margins: np.ndarray, test_y: np.ndarray) -> dict:
    y = rng.integers(0, 2, 200)
    margins = (2.0 * y - 1.0 + shift + rng.normal(0, 1.5, 200))[:, None]
    return {"val_margins": margins, "val_labels": y, "val_index": np.arange(200),
            "test_margins": test_margins, "test_labels": test_y, "test_index": np.arange(len(test_y))}


def test_the_fit_is_the_ensembles_fit_on_the_pooled_validation_predictions() -> None:
    rng = np.random.default_rng(0)
    test_y = rng.integers(0, 2, 300)
    a = _member(rng, 0.5, (2.0 * test_y - 1.0 + rng.normal(0, 1, 300))[:, None], test_y)
    b = _member(rng, -0.5, (3.0 * test_y - 1.0 + rng.normal(0, 2, 300))[:, None], test_y)
    r = tt.transfer([a, b])
    val_m = np.concatenate([a["val_margins"], b["val_margins"]])
    val_y = np.concatenate([a["val_labels"], b["val_labels"]])
    # the kind is chosen by cross-fitting over the two members' validation splits, as over folds
    cal, _ = choose_calibration(val_m, val_y, np.repeat([0, 1], 200))
    assert r["calibration"] == pytest.approx(cal) and set(r["calibration_choice"]) == {"none", "temperature", "platt"}
    assert r["threshold"] == pytest.approx(best_threshold(val_y, member_probs(val_m, cal)))
    # members and average are scored at that one threshold, on calibrated probabilities
    pa, pb = member_probs(a["test_margins"], cal), member_probs(b["test_margins"], cal)
    assert r["members"][0]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(test_y, pa >= r["threshold"]))
    assert r["average"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(test_y, (pa + pb) / 2 >= r["threshold"]))
    assert r["average"]["predicted_atypical"] == pytest.approx(np.mean((pa + pb) / 2 >= r["threshold"]))
    # the ceiling is the best cut on the test domain, so never below the fitted one
    for s in [*r["members"], r["average"]]:
        assert s["balanced_accuracy_at_best"] >= s["balanced_accuracy"] - 1e-12
    assert (r["val_patches"], r["test_patches"], r["test_atypical"]) == ([200, 200], 300, int(test_y.sum()))


def test_identical_members_average_to_themselves() -> None:
    rng = np.random.default_rng(1)
    test_y = rng.integers(0, 2, 100)
    a = _member(rng, 0.0, rng.normal(0, 1, (100, 1)) + test_y[:, None], test_y)
    r = tt.transfer([a, dict(a)])
    assert r["average"] == r["members"][0] == r["members"][1]


def test_members_must_share_the_held_out_patches() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50)
    a = _member(rng, 0.0, rng.normal(0, 1, (50, 1)), y)
    b = {**a, "test_index": np.arange(1, 51)}
    with pytest.raises(ValueError, match="not the same patches"):
        tt.transfer([a, b])


def _run(root: Path, name: str, cfg: dict) -> None:
    (root / name / "model").mkdir(parents=True)
    (root / name / "summary.json").write_text("{}")
    (root / name / "model" / "model.json").write_text("{}")
    (root / name / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_runs_pair_up_by_arm_and_domain_and_differ_only_in_the_seed(tmp_path: Path) -> None:
    cfg = {"run": {"seed": 0, "out": "a"}, "optim": {"epochs": 15}}
    _run(tmp_path, "full-tupac16-s0", cfg)
    _run(tmp_path, "full-tupac16-s1", {"run": {"seed": 1, "out": "b"}, "optim": {"epochs": 15}})
    _run(tmp_path, "erm-tupac16-s0", cfg)  # one seed only: no pair
    groups = tt.group_runs(tmp_path)
    assert list(groups) == [("Full", "TUPAC16")]
    assert [p.name for p in groups[("Full", "TUPAC16")]] == ["full-tupac16-s0", "full-tupac16-s1"]
    _run(tmp_path, "erm-tupac16-s1", {"run": {"seed": 1, "out": "b"}, "optim": {"epochs": 3}})
    with pytest.raises(SystemExit, match=r"optim\.epochs"):
        tt.group_runs(tmp_path)


def test_the_table_is_made_from_the_raw_file(tmp_path: Path) -> None:
    def scores(ba: float, best: float) -> dict:
        return {"balanced_accuracy": ba, "roc_auc": 0.9, "sensitivity": 0.8, "specificity": 0.7,
                "predicted_atypical": 0.3, "ece": 0.05, "best_threshold": 0.4, "balanced_accuracy_at_best": best}

    raw = {"tta": "none", "code": {"commit": "abc1234", "dirty": False}, "date": "2026-11-27T00:00:00Z",
           "rows": [{"arm": "Full", "held_out": "TUPAC16", "runs": ["a", "b"], "temperature": 1.2, "threshold": 0.35,
                     "val_patches": [300, 310], "test_patches": 400, "test_atypical": 100,
                     "members": [scores(0.70, 0.80), scores(0.74, 0.78)], "average": scores(0.75, 0.81)}]}
    (tmp_path / "raw.json").write_text(json.dumps(raw))
    assert tt.main(["--table-only", "--json", str(tmp_path / "raw.json"), "--out", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Full"))
    assert "| temperature 1.200 | 0.350 | 0.720 | 0.750 | +0.030 | 0.790 | 0.810 |" in row  # an older raw file
    raw["rows"][0] = {**raw["rows"][0], "calibration": {"kind": "platt", "scale": 0.5, "bias": -1.0}}
    (tmp_path / "raw.json").write_text(json.dumps(raw))
    assert tt.main(["--table-only", "--json", str(tmp_path / "raw.json"), "--out", str(tmp_path / "t.md")]) == 0
    assert "| Platt, scale 0.500, bias -1.000 | 0.350 |" in (tmp_path / "t.md").read_text()
    assert "0.30 / 0.30 / 0.25" in row
    assert "scores +0.030 balanced accuracy" in text and "abc1234" in text
    assert "averaging makes that loss 0.010 smaller" in text


def test_the_summary_says_which_way_averaging_moves_the_threshold_loss() -> None:
    assert tt._averaging_effect(0.004) == "averaging makes that loss 0.004 larger"
    assert tt._averaging_effect(-0.0004) == "averaging leaves that loss as it is (within 0.001)"


def test_the_queue_call_measures_only_new_seed_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    runs, raw = tmp_path / "runs", tmp_path / "results" / "threshold_transfer.json"
    raw.parent.mkdir()
    measured_runs: list[Path] = []
    committed: list[list[Path]] = []
    earlier: list[dict | None] = []
    monkeypatch.setattr(tt, "measure", lambda r, tta, measured=None: measured_runs.append(r) or earlier.append(measured)
                        or {"rows": [], "tta": tta})
    monkeypatch.setattr(tt, "table", lambda r, source=None: "table\n")
    monkeypatch.setattr(tt, "commit_files", lambda paths, message: committed.append(paths))
    args = ["--runs", str(runs), "--json", str(raw), "--commit"]
    assert tt.main(args) == 0 and not measured_runs  # no run folder yet: nothing to measure, not an error
    assert "nothing to measure" in capsys.readouterr().out
    cfg = {"run": {"seed": 0, "out": "a"}}
    _run(runs, "full-tupac16-s0", cfg)
    _run(runs, "full-tupac16-s1", {"run": {"seed": 1, "out": "b"}})
    assert tt.main([*args, "--dry-run"]) == 0 and not measured_runs
    assert "to measure (1 seed pairs)" in capsys.readouterr().out
    assert tt.main(args) == 0 and measured_runs == [runs]
    assert committed == [[raw, raw.with_suffix(".md")]] and raw.with_suffix(".md").read_text() == "table\n"
    # the raw file that holds the same pairs is current: the next pass of the queue measures nothing
    raw.write_text(json.dumps({"rows": [{"arm": "Full", "held_out": "TUPAC16",
                                         "runs": ["full-tupac16-s0", "full-tupac16-s1"]}]}))
    assert tt.main(args) == 0 and len(measured_runs) == 1 and len(committed) == 1
    assert "measured (1 seed pairs)" in capsys.readouterr().out
    _run(runs, "erm-tupac16-s0", cfg)
    _run(runs, "erm-tupac16-s1", {"run": {"seed": 1, "out": "b"}})
    assert tt.main(args) == 0 and len(measured_runs) == 2 and len(committed) == 2
    assert earlier[-1] is not None and earlier[-1]["rows"][0]["runs"] == ["full-tupac16-s0", "full-tupac16-s1"]
    assert tt.main(["--runs", str(runs), "--json", str(raw)]) == 0 and earlier[-1] is None  # by hand: all afresh


def test_a_pair_measured_before_keeps_its_row_and_only_new_pairs_are_scored(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for arm in ("full", "erm"):
        _run(tmp_path, f"{arm}-tupac16-s0", {"run": {"seed": 0, "out": "a"}})
        _run(tmp_path, f"{arm}-tupac16-s1", {"run": {"seed": 1, "out": "b"}})
    scored: list[str] = []
    monkeypatch.setattr(tt, "member_margins", lambda m, tta, cache: scored.append(m.name))
    monkeypatch.setattr(tt, "transfer", lambda members: {"threshold": 0.3})
    old_row = {"arm": "Full", "held_out": "TUPAC16", "runs": ["full-tupac16-s0", "full-tupac16-s1"], "threshold": 0.2}
    earlier = {"tta": "none", "rows": [old_row], "code": {"commit": "old1234", "dirty": False}, "date": "then"}
    raw = tt.measure(tmp_path, "none", log=lambda *_: None, measured=earlier)
    assert scored == ["erm-tupac16-s0", "erm-tupac16-s1"]  # the Full pair was not scored again
    rows = {r["arm"]: r for r in raw["rows"]}
    assert rows["Full"]["threshold"] == 0.2 and rows["Full"]["code"]["commit"] == "old1234"  # the file's provenance
    assert rows["ERM"]["threshold"] == 0.3 and rows["ERM"]["code"] == raw["code"]
    assert "old1234" in tt._codes(raw).split(", ") and len(tt._codes(raw).split(", ")) == 2  # every commit named
    scored.clear()
    tt.measure(tmp_path, "dihedral4", log=lambda *_: None, measured=earlier)  # other views: nothing carries over
    assert len(scored) == 4


def test_a_setting_added_between_two_seeds_runs_pairs_them_at_its_neutral_value(tmp_path: Path) -> None:
    """A seed trained before data.stain_norm existed pairs with one whose config.yaml writes it as none."""
    _run(tmp_path, "erm-tupac16-s0", {"run": {"seed": 0}, "data": {"center_crop": 64}})
    _run(tmp_path, "erm-tupac16-s1", {"run": {"seed": 1}, "data": {"center_crop": 64, "stain_norm": "none"}})
    assert list(tt.group_runs(tmp_path)) == [("ERM", "TUPAC16")]
    _run(tmp_path, "erm-tupac16-s2", {"run": {"seed": 2}, "data": {"center_crop": 64, "stain_norm": "reinhard"}})
    with pytest.raises(SystemExit, match=r"data\.stain_norm"):
        tt.group_runs(tmp_path)
