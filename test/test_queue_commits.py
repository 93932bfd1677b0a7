"""A queue's commit of a result takes the generated files that quote it along (benchmarks/derived.py):
otherwise a checkout left by a queue fails its own README and model-card tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from amf.card import CARD_NAME, WEIGHTS_NAME
from benchmarks.driver import commit_files

REPO = Path(__file__).resolve().parents[1]
TABLE = "benchmarks/results/x.md"
README = f"# Project\n\n<!-- begin: {TABLE} -->\n| old |\n<!-- end: {TABLE} -->\n"
PAGE = f"# Benchmarks\n\nmore words\n<!-- begin: {TABLE} -->\n| old |\n<!-- end: {TABLE} -->\n"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the checkout regenerates with its own code: lend it this one's
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "queue@example.org")
    git(tmp_path, "config", "user.name", "queue")
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "benchmarks/README.md").write_text(PAGE, encoding="utf-8")
    git(tmp_path, "add", "README.md", "benchmarks/README.md")
    git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def test_a_committed_result_brings_the_readme_tables_that_quote_it(checkout: Path) -> None:
    (checkout / TABLE).write_text("# x\n\n| new |\n|---|\n| 1 |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    assert "| new |\n|---|\n| 1 |" in git(checkout, "show", "HEAD:README.md")
    assert git(checkout, "show", "HEAD:benchmarks/README.md") == PAGE.replace("| old |", "| new |\n|---|\n| 1 |")
    assert git(checkout, "status", "--porcelain") == ""


def test_a_result_named_by_a_relative_path_commits_too(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a person runs a driver by hand from the checkout (`--json benchmarks/results/...`)."""
    (checkout / TABLE).write_text("# x\n\n| new |\n|---|\n| 1 |\n", encoding="utf-8")
    monkeypatch.chdir(checkout)
    commit_files([Path(TABLE)], "result")
    assert git(checkout, "log", "-1", "--format=%s") == "result\n"
    assert git(checkout, "status", "--porcelain") == ""


def test_a_readme_being_edited_is_left_out(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (checkout / "README.md").write_text(README + "\nhalf a sentence", encoding="utf-8")
    (checkout / TABLE).write_text("| new |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    assert git(checkout, "show", "HEAD:README.md") == README
    assert (checkout / "README.md").read_text(encoding="utf-8").endswith("half a sentence")
    assert git(checkout, "show", f"HEAD:{TABLE}") == "| new |\n"
    assert "README.md has uncommitted edits" in capsys.readouterr().err
    # the other page quoting the result was not being edited: it comes along
    assert git(checkout, "show", "HEAD:benchmarks/README.md") == PAGE.replace("| old |", "| new |")


def test_the_model_card_is_regenerated_from_the_checkouts_own_model(checkout: Path) -> None:
    (checkout / "model").mkdir()
    for name in (CARD_NAME, WEIGHTS_NAME):
        shutil.copy(REPO / "model" / name, checkout / "model" / name)
    card = checkout / "benchmarks/results/model_card.md"
    card.write_text("stale\n", encoding="utf-8")
    git(checkout, "add", "model", str(card))
    git(checkout, "commit", "-q", "-m", "model")
    (checkout / TABLE).write_text("| new |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    committed = git(checkout, "show", "HEAD:benchmarks/results/model_card.md")
    assert committed.startswith("# Model card: `model`")
    assert git(checkout, "status", "--porcelain") == ""


def test_a_failing_regeneration_still_commits_the_result(checkout: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PYTHONPATH")  # the checkout's code cannot run: the result must land all the same
    (checkout / TABLE).write_text("| new |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    assert git(checkout, "show", f"HEAD:{TABLE}") == "| new |\n"
    assert git(checkout, "show", "HEAD:README.md") == README
    assert "could not regenerate" in capsys.readouterr().err


def test_a_block_whose_file_has_edits_the_commit_does_not_take_keeps_its_committed_text(
        checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A half-written table beside the queue (a mutation run's, say) must not reach the committed README
    without the table itself, or a clean clone fails its README test."""
    other = "benchmarks/results/other.md"
    (checkout / other).write_text("| other |\n", encoding="utf-8")
    (checkout / "README.md").write_text(README + f"\n<!-- begin: {other} -->\n| other |\n<!-- end: {other} -->\n",
                                        encoding="utf-8")
    git(checkout, "add", "README.md", other)
    git(checkout, "commit", "-q", "-m", "two blocks")
    (checkout / other).write_text("| half written |\n", encoding="utf-8")
    (checkout / TABLE).write_text("| new |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    readme = git(checkout, "show", "HEAD:README.md")
    assert f"<!-- begin: {TABLE} -->\n| new |\n" in readme  # the block of what it commits is refilled
    assert "| other |" in readme and "half written" not in readme  # the other keeps its committed text
    assert git(checkout, "status", "--porcelain").strip() == f"M {other}"
    assert f"{other} has uncommitted edits that this commit does not take" in capsys.readouterr().err


def test_an_ablation_result_brings_every_recipes_held_out_page(checkout: Path) -> None:
    from test_held_out import SHIPPED_CONFIG, record

    from benchmarks.ablation import DOMAINS
    from benchmarks.answers import SHIPPED, ablation_results

    folder = checkout / ablation_results(SHIPPED)
    for dom in DOMAINS:
        record(folder, dom, 0, 0.78, 0.87, SHIPPED_CONFIG, "2026-11-29T00:00:00Z")
    git(checkout, "add", ".")
    git(checkout, "commit", "-q", "-m", "the shipped recipe's runs")
    record(folder, "TUPAC16", 1, 0.80, 0.88, SHIPPED_CONFIG, "2026-11-30T00:00:00Z")
    commit_files([folder / "full-tupac16-s1.json"], "result")
    page = git(checkout, "show", "HEAD:benchmarks/results/held_out.md")
    assert "| the shipped recipe | 4 | 0.790 ± 0.014 / 0.875 ± 0.007 |" in page
    assert "benchmarks/results/held_out.png" in git(checkout, "show", "--name-only", "--format=", "HEAD")
    assert git(checkout, "status", "--porcelain") == ""


def test_an_ablation_result_brings_the_nested_page_whose_held_out_column_it_feeds(checkout: Path) -> None:
    from test_nested_lodo import SIGMA, outer_run, study

    study(checkout)
    from benchmarks import nested_lodo

    nested_lodo.write_outputs(checkout / "benchmarks/results/nested_lodo")
    git(checkout, "add", ".")
    git(checkout, "commit", "-q", "-m", "the nested study and the held-out arms")
    outer_run(checkout, SIGMA, "TUPAC16", 2, 0.95)  # a third seed of the candidate's held-out arm
    record = next((checkout / "benchmarks/results").glob("ablation-*hed-sigma-0.2/ablation/*TUPAC16-s2.json"))
    commit_files([record], "result")
    page = git(checkout, "show", "HEAD:benchmarks/results/nested_lodo.md")
    assert "| TUPAC16 | augment.hed_sigma=0.2 | 0.815 ± 0.007 | 0.915 ± 0.007 | +0.050 higher | 0.850 / 0.930 |" in page
    assert git(checkout, "status", "--porcelain") == ""


def test_a_page_the_driver_wrote_and_commits_is_no_ones_unfinished_edit(
        checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The nested driver's first result commits a page git has not seen: regenerated, and no warning."""
    from test_nested_lodo import study

    from benchmarks import nested_lodo

    results = study(checkout)
    held_back = next(results.glob("*.json"))
    git(checkout, "add", ".")
    git(checkout, "reset", "-q", "--", str(held_back))
    git(checkout, "commit", "-q", "-m", "all but one run")
    written = nested_lodo.write_outputs(results)
    commit_files([held_back, *written], "result")
    assert "uncommitted edits" not in capsys.readouterr().err
    assert "**The picks.**" in git(checkout, "show", "HEAD:benchmarks/results/nested_lodo.md")
    assert git(checkout, "status", "--porcelain") == ""


def test_a_held_out_page_that_cannot_be_made_leaves_the_readme_tables_regenerated(
        checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.answers import SHIPPED, ablation_results

    folder = checkout / ablation_results(SHIPPED)
    folder.mkdir(parents=True)
    (folder / "erm-tupac16-s0.json").write_text('{"arm": "ERM"}')  # no Full run: nothing to set recipes against
    (checkout / TABLE).write_text("| new |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    assert "| new |" in git(checkout, "show", "HEAD:README.md")
    assert "could not regenerate benchmarks/results/held_out.md" in capsys.readouterr().err


def test_a_committed_table_is_rewritten_by_the_checkouts_own_code(checkout: Path) -> None:
    """A queue's worktree may lay a table out as the checkout no longer does: the commit takes the
    checkout's layout, made by the command the table's own header names."""
    from test_held_out import SHIPPED_CONFIG, record

    from benchmarks.ablation import DOMAINS

    folder = checkout / "benchmarks/results/ablation-x/ablation"
    for dom in DOMAINS:
        record(folder, dom, 0, 0.78, 0.87, SHIPPED_CONFIG, "2026-11-29T00:00:00Z")
    for rec in folder.glob("*.json"):  # what the ablation's tables read beyond the held-out page's fields
        data = json.loads(rec.read_text())
        data["config"]["optim"].update(epochs=15, batch_size=64, loss="weighted_ce")
        data["config"]["model"] = {"backbone": "tf_efficientnet_lite0", "pretrained": "wheel"}
        data["config"]["data"].update(manifests=["m.csv"], input_size=128)
        rec.write_text(json.dumps({**data, "machine": {"cpu": "cpu", "cpus": 2, "gpu": None}, "curve": [],
                                   "terms": {}, "pretrained": "wheel"}))
    table = folder.parent / "ablation.md"
    table.write_text("# an older layout\n\nGenerated by `python -m benchmarks.ablation --table-only --results "
                     "benchmarks/results/ablation-x/ablation` from the raw results.\n", encoding="utf-8")
    commit_files([*folder.glob("*.json"), table], "result")
    committed = git(checkout, "show", "HEAD:benchmarks/results/ablation-x/ablation.md")
    assert committed.startswith("# Leave-one-domain-out ablation on AMi-Br")
    assert "| Full | 0.780¹ / 0.870¹ |" in committed
    # what the regeneration wrote beside it (the curves) comes along, though the commit did not name it
    assert "ablation_curves.png" in git(checkout, "show", "--name-only", "--format=", "HEAD")
    assert git(checkout, "status", "--porcelain", "--", "benchmarks/results/ablation-x") == ""


def test_a_committing_driver_leaves_its_tables_as_committed(tmp_path: Path) -> None:
    """A queue's driver runs from a pinned worktree: after its commits (whose tables the checkout's own
    code made) it must not write them again with the worktree's code."""
    from argparse import Namespace

    from benchmarks.driver import plan_then_tables

    written: list[Path] = []
    args = Namespace(dry_run=False, table_only=False, results=tmp_path / "r", commit=True)
    assert plan_then_tables(args, lambda a: None, lambda r: written.append(r) or "") == 0
    assert written == []
    args.commit = False
    plan_then_tables(args, lambda a: None, lambda r: written.append(r) or "")
    assert written == [tmp_path / "r"]
