"""Every relative link of the hand-written documentation lands: the file exists and, with a #fragment,
a heading of that file has that anchor (GitHub's rule). A section moved between pages breaks no link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "benchmarks/README.md"]
# [text](target), the target without spaces; images too. Code spans are dropped first.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept),
    each space a hyphen."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _FENCE.sub("", markdown).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            a = anchor(m[1])
            n = seen.get(a, 0)
            seen[a] = n + 1
            found.add(a if n == 0 else f"{a}-{n}")  # GitHub numbers repeated headings
    return found


def links(markdown: str) -> list[str]:
    return _LINK.findall(_CODE.sub("", _FENCE.sub("", markdown)))


def broken(page: Path) -> list[str]:
    out = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text(encoding="utf-8")):
            out.append(f"{target}: no heading with that anchor in {path or page.name}")
    return out


@pytest.mark.parametrize("name", PAGES)
def test_every_relative_link_lands(name: str) -> None:
    page = REPO / name
    assert page.is_file(), f"{name} is missing"
    assert not broken(page), f"broken links in {name}: {broken(page)}"


def test_the_checker_sees_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## The `run` command: 50 stacks\n\n```\n[x](gone.md)\n```\n"
                                   "[ok](#the-run-command-50-stacks) [up](#top) [code](`x`) [b](b.md#nowhere) "
                                   "[c](c.md) [web](https://example.org/x#y)\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# B\n", encoding="utf-8")
    assert broken(tmp_path / "a.md") == ["b.md#nowhere: no heading with that anchor in b.md", "c.md: no such file"]
