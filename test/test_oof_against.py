"""benchmarks/oof_against.py: a candidate's K-fold ensemble against the shipped one's, fold by fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.oof_against import main


def ensemble(folder: Path, folds: list[tuple[float, float]], sigma: float, counts: int = 100) -> Path:
    folder.mkdir(parents=True)
    per_fold = [{"balanced_accuracy": ba, "roc_auc": auc, "n": counts + k, "n_atypical": 20} for k, (ba, auc)
                in enumerate(folds)]
    n = sum(f["n"] for f in per_fold)
    report = {"patches": n, "per_fold": per_fold, "threshold": 0.3, "ece_after": 0.02,
              "overall": {"balanced_accuracy": sum(b for b, _ in folds) / len(folds),
                          "roc_auc": sum(a for _, a in folds) / len(folds), "n": n, "n_atypical": 20 * len(folds)}}
    (folder / "ensemble_report.json").write_text(json.dumps(report))
    config = {"optim": {"sampler": "shuffle"}, "augment": {"hed_sigma": sigma}, "data": {"fold": 0}}
    (folder / "fold-0.json").write_text(json.dumps({"config": config}))
    return folder


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    return ensemble(tmp_path / "shipped", [(0.78, 0.87), (0.82, 0.91), (0.80, 0.88), (0.86, 0.91), (0.82, 0.88)], 0.05)


def test_folds_side_by_side_with_the_house_call_and_the_paired_view(shipped: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    mine = ensemble(tmp_path / "mine", [(0.80, 0.88), (0.83, 0.91), (0.81, 0.89), (0.87, 0.92), (0.81, 0.88)], 0.2)
    assert main([str(mine), "--against", str(shipped)]) == 0
    text = (mine / "against_shipped.md").read_text()
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "differing in augment.hed_sigma=0.2." in text
    assert "| 0 | 100 (20) | 0.780 / 0.870 | 0.800 / 0.880 | +0.020 / +0.010 |" in text
    assert "| pooled | 510 (100) | 0.816 / 0.890 | 0.824 / 0.896 | +0.008 / +0.006 |" in text
    # folds differ by ~0.03 from each other, so +0.008 is no difference by the rule; paired, 4 of 5 folds are higher
    assert "BA +0.008 no difference; AUC +0.006 no difference." in text
    assert "BA +0.008 ± 0.011, higher on 4 of 5 folds; AUC +0.006 ± 0.005, higher on 3 of 5 folds." in text


def test_ensembles_of_other_folds_are_refused_in_one_line(shipped: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    other = ensemble(tmp_path / "other", [(0.8, 0.9)] * 5, 0.2, counts=90)
    assert main([str(other), "--against", str(shipped)]) == 2
    assert "folds differ" in capsys.readouterr().err and not (other / "against_shipped.md").exists()
    assert main([str(tmp_path / "nowhere"), "--against", str(shipped)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no finished ensemble" in err

