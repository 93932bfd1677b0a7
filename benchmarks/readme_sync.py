"""Copy generated result tables into the README and the benchmarks page, so their numbers are the
result files' own.

    python -m benchmarks.readme_sync          # rewrite the marked blocks of README.md and benchmarks/README.md
    python -m benchmarks.readme_sync --check  # exit 1 if a block differs from its file (a test runs this)

A block is marked in either page (its path is relative to the checkout, wherever the page lies) as

    <!-- begin: benchmarks/results/ablation.md -->
    ...the tables of that file, copied...
    <!-- end: benchmarks/results/ablation.md -->

and receives every Markdown table of the named file, in order, separated by a blank line;
``<!-- begin: FILE#1 -->`` ... ``<!-- end: FILE#1 -->`` receives only its first table (``#2`` the
second, ...), for a file whose later tables are too long to quote. A non-numeric selector takes a
verdict instead of a table: ``<!-- begin: FILE#the-goal -->`` receives the paragraph of FILE that
opens with ``**The goal**`` (the bold lead, lower-cased, each run of other characters a hyphen), so
that prose can quote a generated sentence rather than retype what it says; where no paragraph opens
so, it receives the first table under the heading of that slug (``FILE#the-pick-per-held-out-domain``
quotes the table under ``## The pick per held-out domain``), which stays right when the file gains a
table above it, as a number would not.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Collection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The hand-written pages that quote results: the README, and the benchmarks page it sends readers to.
PAGES = (Path("README.md"), Path("benchmarks/README.md"))
_BLOCK = re.compile(r"(<!-- begin: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end: (?P=path) -->)", re.S)


def tables(markdown: str, which: int | None = None) -> str:
    """Every table (consecutive lines starting with '|') of a Markdown text, or only table ``which`` (1-based)."""
    found, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append("\n".join(current))
            current = []
    if current:
        found.append("\n".join(current))
    if which is not None:
        return found[which - 1] if 0 < which <= len(found) else f"(no table {which})"
    return "\n\n".join(found)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def paragraph(markdown: str, lead: str) -> str | None:
    """The paragraph of a Markdown text that opens with the bold lead whose slug is ``lead``."""
    for block in re.split(r"\n\s*\n", markdown):
        m = re.match(r"\*\*(.+?)\*\*", block.strip())
        if m and _slug(m[1]) == lead:
            return block.strip()
    return None


def section_table(markdown: str, heading: str) -> str | None:
    """The first table under the Markdown heading whose slug is ``heading``, before the next heading."""
    parts = re.split(r"^(#{1,6} .*)$", markdown, flags=re.M)
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        if _slug(title.lstrip("#")) == heading:
            found = tables(body)
            return found.split("\n\n", 1)[0] if found else None
    return None


def _quote(markdown: str, selector: str) -> str:
    if not selector:
        return tables(markdown)
    if selector.isdigit():
        return tables(markdown, int(selector))
    found = paragraph(markdown, selector) or section_table(markdown, selector)
    return found or f"(no paragraph opening with **{selector.replace('-', ' ')}**, nor a table under such a heading)"


def sources(readme: str) -> list[str]:
    """The result files the README's blocks quote, each once, relative to the checkout."""
    return sorted({m["path"].partition("#")[0] for m in _BLOCK.finditer(readme)})


def synced(readme: str, root: Path = REPO, keep: Collection[str] = ()) -> str:
    """``readme`` with every block refilled from its file under ``root``, but those quoting a file in
    ``keep``, which stay as they are."""
    def fill(m: re.Match[str]) -> str:
        name, _, which = m["path"].partition("#")
        if name in keep:
            return m[0]
        source = root / name
        body = _quote(source.read_text(encoding="utf-8"), which) if source.is_file() else f"({name} is missing)"
        return f"{m[1]}{body}\n{m[4]}"

    return _BLOCK.sub(fill, readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", type=Path, nargs="+", default=[REPO / p for p in PAGES],
                        help="the pages to refill (default: README.md and benchmarks/README.md)")
    args = parser.parse_args()
    stale = []
    for page in args.readme:
        text = page.read_text(encoding="utf-8")
        new = synced(text)
        if new == text:
            continue
        if args.check:
            stale.append(str(page))
        else:
            page.write_text(new, encoding="utf-8")
    if stale:
        print(f"{', '.join(stale)} quote stale numbers: run python -m benchmarks.readme_sync", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
