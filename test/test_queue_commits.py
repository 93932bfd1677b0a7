"""A queue's commit of a result takes the generated files that quote it along (benchmarks/derived.py):
otherwise a checkout left by a queue fails its own README and model-card tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from amf.card import CARD_NAME, WEIGHTS_NAME
from benchmarks.driver import commit_files

REPO = Path(__file__).resolve().parents[1]
TABLE = "benchmarks/results/x.md"
README = f"# Project\n\n<!-- begin: {TABLE} -->\n| old |\n<!-- end: {TABLE} -->\n"


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
    git(tmp_path, "add", "README.md")
    git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def test_a_committed_result_brings_the_readme_tables_that_quote_it(checkout: Path) -> None:
    (checkout / TABLE).write_text("# x\n\n| new |\n|---|\n| 1 |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    assert "| new |\n|---|\n| 1 |" in git(checkout, "show", "HEAD:README.md")
    assert git(checkout, "status", "--porcelain") == ""


def test_a_readme_being_edited_is_left_out(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (checkout / "README.md").write_text(README + "\nhalf a sentence", encoding="utf-8")
    (checkout / TABLE).write_text("| new |\n", encoding="utf-8")
    commit_files([checkout / TABLE], "result")
    assert git(checkout, "show", "HEAD:README.md") == README
    assert (checkout / "README.md").read_text(encoding="utf-8").endswith("half a sentence")
    assert git(checkout, "show", f"HEAD:{TABLE}") == "| new |\n"
    assert "README.md has uncommitted edits" in capsys.readouterr().err


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
