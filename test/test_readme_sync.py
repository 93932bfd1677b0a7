"""The README quotes generated result tables verbatim: a stale copy fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.readme_sync import PAGES, synced, tables

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("page", "quotes"), [("README.md", "benchmarks/results/model_card.md"),
                                              ("benchmarks/README.md", "benchmarks/results/ablation.md")])
def test_readme_blocks_match_their_result_files(page: str, quotes: str) -> None:
    assert Path(page) in PAGES
    readme = (REPO / page).read_text(encoding="utf-8")
    assert f"<!-- begin: {quotes} -->" in readme
    assert synced(readme) == readme, "run python -m benchmarks.readme_sync"


def test_sync_copies_every_table_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "r.md").write_text("# t\n\ntext\n| a |\n|---|\n| 1 |\nmore\n| b |\n|---|\n")
    readme = "x\n<!-- begin: r.md -->\nold\n<!-- end: r.md -->\ny\n"
    want = "x\n<!-- begin: r.md -->\n| a |\n|---|\n| 1 |\n\n| b |\n|---|\n<!-- end: r.md -->\ny\n"
    assert synced(readme, tmp_path) == want
    assert tables("no table") == ""


def test_a_block_can_take_one_table_of_its_file(tmp_path: Path) -> None:
    (tmp_path / "r.md").write_text("| a |\n|---|\ntext\n| b |\n|---|\n")
    readme = "<!-- begin: r.md#2 -->\nold\n<!-- end: r.md#2 -->\n"
    assert synced(readme, tmp_path) == "<!-- begin: r.md#2 -->\n| b |\n|---|\n<!-- end: r.md#2 -->\n"
    assert tables("| a |\n|---|\n", 3) == "(no table 3)"


def test_a_block_can_take_a_generated_verdict_paragraph(tmp_path: Path) -> None:
    (tmp_path / "r.md").write_text("| a |\n|---|\n\n**The goal** (x): met on A;\nmissed on B.\n\n**Other.** no\n")
    readme = "<!-- begin: r.md#the-goal -->\nold\n<!-- end: r.md#the-goal -->\n"
    assert synced(readme, tmp_path) == ("<!-- begin: r.md#the-goal -->\n**The goal** (x): met on A;\nmissed on B.\n"
                                        "<!-- end: r.md#the-goal -->\n")
    missing = "<!-- begin: r.md#no-such -->\n<!-- end: r.md#no-such -->\n"
    assert "(no paragraph opening with **no such**, nor a table under such a heading)" in synced(missing, tmp_path)


def test_a_block_can_take_the_table_under_a_heading_wherever_it_moves(tmp_path: Path) -> None:
    page = ("# Page\n\n## First part\n\n| a |\n|---|\n\n## The pick, per domain\n\ntext\n\n| b |\n|---|\n\n"
            "| c |\n|---|\n")
    (tmp_path / "r.md").write_text(page)
    readme = "<!-- begin: r.md#the-pick-per-domain -->\nold\n<!-- end: r.md#the-pick-per-domain -->\n"
    want = "<!-- begin: r.md#the-pick-per-domain -->\n| b |\n|---|\n<!-- end: r.md#the-pick-per-domain -->\n"
    assert synced(readme, tmp_path) == want
    # a table added above it moves every number, not the heading
    (tmp_path / "r.md").write_text(page.replace("## First part\n", "## New\n\n| n |\n|---|\n\n## First part\n"))
    assert synced(readme, tmp_path) == want
    (tmp_path / "r.md").write_text("# Page\n\n## The pick, per domain\n\nno table yet\n")
    assert "nor a table under such a heading" in synced(readme, tmp_path)
