"""Regenerate what the committed results feed, so that a queue's commit never leaves stale numbers.

A driver that commits a raw result changes what these generated files must say: the model card
(``benchmarks.model_card`` reads the shipped recipe's ablation, the latency and the threshold
transfer), every recipe's held-out page (``benchmarks.held_out``, from every ablation folder), the
nested leave-one-domain-out page (``benchmarks.nested_lodo``, whose held-out column is those
folders' Full arms), the shipped ensemble's held-out page (``benchmarks.lodo_ensemble``) and the tables
the README and the benchmarks page quote (``benchmarks.readme_sync``). They are tested against the
results, so a queue that committed only its result would leave the checkout failing its own tests
until someone regenerated them by hand. ``refresh`` rewrites them in the checkout the results belong
to, and returns the files it changed for the same commit. A driver runs it as

    python -m benchmarks.derived ROOT   # in ROOT: prints the files it rewrote, one per line

inside that checkout, so that the checkout's own code (the code its tests run) writes them, not
the code of the worktree a queue was started from, which may predate a ship. For the same reason a
generated table among the files committed (a driver's ``ablation.md``, say) is rewritten first by the
command its own header names, with the checkout's code (test_generated_fresh.py holds every
committed table to that command).

A file (or the model directory behind the card) with uncommitted edits is left alone, with a
warning: committing it would take a person's half-done work along with a result. So is a README
block whose result file has uncommitted edits that this commit does not take (``--committing``
names what it takes): a mutation run's half-written table, say, would otherwise reach the README
committed without the table itself, and a clean clone would fail its README test.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from amf.atomic import write_text_atomic
from amf.card import CARD_NAME
from benchmarks.readme_sync import PAGES, sources, synced

CARD = Path("benchmarks/results/model_card.md")


def _changed(root: Path, paths: list[str]) -> set[str] | None:
    """The files under ``paths`` (relative to ``root``) that differ from HEAD (edited, staged or
    untracked-and-new all count); None when git cannot tell."""
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all", "--", *paths],
                            capture_output=True, text=True)
    return {line[3:].strip('"') for line in status.stdout.splitlines()} if status.returncode == 0 else None


def _clean(root: Path, *paths: Path) -> bool:
    """No file under ``paths`` differs from HEAD."""
    return _changed(root, [str(p) for p in paths]) == set()


def _dirty(root: Path, names: list[str]) -> set[str]:
    """Those of the files ``names`` that differ from HEAD (all of them when git cannot tell, as ``_clean``)."""
    if not names:
        return set()
    changed = _changed(root, names)
    return set(names) if changed is None else {name for name in names if name in changed}


def _rewrite(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text_atomic(path, text)
    return True


def _card_text(root: Path) -> str:
    from benchmarks import model_card  # it imports the drivers, which import this module

    return model_card.render(model_card.gather(**model_card.sources(root)))


def refresh(root: Path, committing: list[Path] | None = None) -> list[Path]:
    """Regenerate the model card and the quoted tables of the README and the benchmarks page in checkout
    ``root``; the files changed.
    With ``committing`` (the files the caller commits), a page's block whose file has other uncommitted
    edits keeps its committed text; without it every block is refilled (drivers older than the list)."""
    changed: list[Path] = []
    card = root / CARD
    changed += _retabulate(root, committing or [])
    changed += _held_out(root, committing or [])
    if (root / "model" / CARD_NAME).is_file():
        if _clean(root, CARD, Path("model")):
            if _rewrite(card, _card_text(root)):
                changed.append(card)
        else:
            print(f"warning: {CARD} or model/ has uncommitted edits, so the card was left as is; "
                  "run python -m benchmarks.model_card before committing them", file=sys.stderr)
    for page in PAGES:
        readme = root / page
        if not readme.is_file():
            continue
        if not _clean(root, page):
            print(f"warning: {page} has uncommitted edits, so its tables were left as they are; "
                  "run python -m benchmarks.readme_sync before committing it", file=sys.stderr)
            continue
        text = readme.read_text(encoding="utf-8")
        keep: set[str] = set()
        if committing is not None:
            taken = {str(p.resolve().relative_to(root)) for p in [*committing, *changed]
                     if p.resolve().is_relative_to(root)}
            keep = _dirty(root, sources(text)) - taken
            for name in sorted(keep):
                print(f"warning: {name} has uncommitted edits that this commit does not take, so the {page} "
                      "block quoting it was left as it is", file=sys.stderr)
        if _rewrite(readme, synced(text, root, keep)):
            changed.append(readme)
    return changed


# A table a driver generates from raw results names, in its header, the command that regenerates it:
# with --table-only for the drivers that otherwise train or measure, as it stands for those that only read.
_TABLE_HEADER = re.compile(r"Generated by `python -m (benchmarks\.\w+)((?: [^`]*)?)`")
_TABLE_ONLY = {"benchmarks.ablation", "benchmarks.choices", "benchmarks.studies", "benchmarks.tta_oof",
               "benchmarks.threshold_transfer", "benchmarks.nested_lodo"}
_READ_ONLY = {"benchmarks.oof_against"}
# where each of those drivers keeps its raw results when the command names none (its --results default)
DEFAULT_RESULTS = {"benchmarks.choices": "benchmarks/results/choices",
                   "benchmarks.studies": "benchmarks/results/studies", "benchmarks.tta_oof": "benchmarks/results",
                   "benchmarks.nested_lodo": "benchmarks/results/nested_lodo"}


def table_command(text: str) -> list[str] | None:
    """``-m`` and the arguments that regenerate a generated table from its raw results, read from the
    table's own header, its results folder always named (relative to the checkout); None for any other text
    (a table whose driver would train or measure to make it, the model card, ...)."""
    match = _TABLE_HEADER.search(text)
    if not match:
        return None
    driver, args = match[1], match[2].split()
    if driver in _READ_ONLY:
        return [driver, *args]
    if driver not in _TABLE_ONLY or "--table-only" not in args:
        return None
    if "--results" not in args and "--json" not in args:
        args += ["--results", DEFAULT_RESULTS[driver]]
    return [driver, *args]


def _retabulate(root: Path, committing: list[Path]) -> list[Path]:
    """Rewrite the generated tables among ``committing`` with the checkout's own code: a queue writes them
    with the code of the worktree it started from, which may lay a table out as the checkout no longer does.
    The files the regeneration changed beside a table (its figure) that the commit did not name come back."""
    extra: list[Path] = []
    named = {str(p.resolve().relative_to(root)) for p in committing if p.resolve().is_relative_to(root)}
    for path in committing:
        inside = path.resolve().is_relative_to(root) and path.suffix == ".md" and path.is_file()
        command = table_command(path.read_text(encoding="utf-8")) if inside else None
        if command is None:
            continue
        beside = str(path.resolve().parent.relative_to(root))
        before = _changed(root, [beside]) or set()
        run = subprocess.run([sys.executable, "-m", *command], cwd=root, capture_output=True, text=True)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"warning: could not regenerate {path} with this checkout's code ({last}); it is committed as "
                  "the queue wrote it", file=sys.stderr)
        extra += [root / name for name in sorted((_changed(root, [beside]) or set()) - before - named)]
    return extra


def _held_out(root: Path, committing: list[Path]) -> list[Path]:
    """The pages that read every recipe's held-out arm, rewritten when a result changed them: every
    recipe's held-out page (benchmarks.held_out) and, where their runs exist, the nested
    leave-one-domain-out page (benchmarks.nested_lodo), whose held-out column is those arms, and the
    shipped ensemble's held-out page (benchmarks.lodo_ensemble), set against the shipped Full arm."""
    from benchmarks import held_out, lodo_ensemble, nested_lodo
    from benchmarks.answers import SHIPPED, ablation_results
    from training.ensemble import REPORT

    if not any((root / ablation_results(SHIPPED)).glob("*.json")):
        return []  # a checkout without the shipped recipe's ablation has nothing to set recipes against
    pages = [([held_out.RESULTS / name for name in held_out.OUTPUTS], lambda: held_out.write(root),
              "python -m benchmarks.held_out")]
    for nested in sorted((root / held_out.RESULTS).glob(f"{nested_lodo.RESULTS.name}*/")):
        if any(nested.glob("*.json")):
            pages.append(([held_out.RESULTS / p.name for p in nested_lodo.outputs(nested)],
                          lambda nested=nested: nested_lodo.write_outputs(nested),
                          f"python -m benchmarks.nested_lodo --table-only --results {held_out.RESULTS / nested.name}"))
    if (root / lodo_ensemble.TABLE).is_file() or any((root / lodo_ensemble.RESULTS).glob(f"*/{REPORT}")):
        pages.append(([lodo_ensemble.TABLE, lodo_ensemble.FIGURE], lambda: lodo_ensemble.write(root),
                      "python -m benchmarks.lodo_ensemble"))
    taken = {p.resolve() for p in committing}  # what the caller's own driver wrote is no one's half-done edit
    changed: list[Path] = []
    for paths, write, command in pages:
        if _dirty(root, [str(p) for p in paths]) - {str(p) for p in paths if (root / p).resolve() in taken}:
            print(f"warning: {paths[0]} or its figure has uncommitted edits, so they were left as they are; "
                  f"run {command} before committing them", file=sys.stderr)
            continue
        before = {p: (root / p).read_bytes() if (root / p).is_file() else None for p in paths}
        try:
            write()
        except (ValueError, KeyError, OSError, StopIteration) as err:  # the card and README must still be made
            print(f"warning: could not regenerate {paths[0]} ({err!r}); run {command}", file=sys.stderr)
            continue
        changed += [root / p for p in paths if (root / p).read_bytes() != before[p]]
    return changed


def refresh_in(root: Path, committing: list[Path]) -> list[Path]:
    """``refresh`` run by checkout ``root``'s own code; a failure there is a warning, never a lost result."""
    run = subprocess.run([sys.executable, "-m", "benchmarks.derived", str(root), "--committing",
                          *map(str, committing)], cwd=root, capture_output=True, text=True)
    if run.returncode == 0:
        sys.stderr.write(run.stderr)  # its warnings about files left alone
        return [Path(line) for line in run.stdout.splitlines() if line]
    last = (run.stderr.strip().splitlines() or ["no message"])[-1]
    print(f"warning: could not regenerate the model card and README tables in {root} ({last}); "
          "run python -m benchmarks.derived there before committing", file=sys.stderr)
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, nargs="?", default=Path(__file__).resolve().parents[1],
                        help="the checkout (default: this one)")
    parser.add_argument("--committing", type=Path, nargs="*",
                        help="the files the caller commits with what this rewrites")
    args = parser.parse_args(argv)
    for path in refresh(args.root.resolve(), args.committing):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
