"""Regenerate what the committed results feed, so that a queue's commit never leaves stale numbers.

A driver that commits a raw result changes what two generated files must say: the model card
(``benchmarks.model_card`` reads the shipped recipe's ablation, the latency and the threshold
transfer) and the README's quoted tables (``benchmarks.readme_sync``). Both are tested against the
results, so a queue that committed only its result would leave the checkout failing its own tests
until someone regenerated them by hand. ``refresh`` rewrites both in the checkout the results belong
to, and returns the files it changed for the same commit. A driver runs it as

    python -m benchmarks.derived ROOT   # in ROOT: prints the files it rewrote, one per line

inside that checkout, so that the checkout's own code (the code its tests run) writes them, not
the code of the worktree a queue was started from, which may predate a ship.

A file (or the model directory behind the card) with uncommitted edits is left alone, with a
warning: committing it would take a person's half-done work along with a result.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from amf.atomic import write_text_atomic
from amf.card import CARD_NAME
from benchmarks.readme_sync import synced

CARD = Path("benchmarks/results/model_card.md")
README = Path("README.md")


def _clean(root: Path, *paths: Path) -> bool:
    """No path differs from HEAD (edited, staged or untracked-and-new all count as a difference)."""
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *map(str, paths)],
                            capture_output=True, text=True)
    return status.returncode == 0 and not status.stdout.strip()


def _rewrite(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text_atomic(path, text)
    return True


def _card_text(root: Path) -> str:
    from benchmarks import model_card  # it imports the drivers, which import this module

    return model_card.render(model_card.gather(**model_card.sources(root)))


def refresh(root: Path) -> list[Path]:
    """Regenerate the model card and the README's quoted tables in checkout ``root``; the files changed."""
    changed: list[Path] = []
    card, readme = root / CARD, root / README
    if (root / "model" / CARD_NAME).is_file():
        if _clean(root, CARD, Path("model")):
            if _rewrite(card, _card_text(root)):
                changed.append(card)
        else:
            print(f"warning: {CARD} or model/ has uncommitted edits, so the card was left as is; "
                  "run python -m benchmarks.model_card before committing them", file=sys.stderr)
    if readme.is_file():
        if _clean(root, README):
            if _rewrite(readme, synced(readme.read_text(encoding="utf-8"), root)):
                changed.append(readme)
        else:
            print(f"warning: {README} has uncommitted edits, so its tables were left as they are; "
                  "run python -m benchmarks.readme_sync before committing it", file=sys.stderr)
    return changed


def refresh_in(root: Path) -> list[Path]:
    """``refresh`` run by checkout ``root``'s own code; a failure there is a warning, never a lost result."""
    run = subprocess.run([sys.executable, "-m", "benchmarks.derived", str(root)], cwd=root,
                         capture_output=True, text=True)
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
    args = parser.parse_args(argv)
    for path in refresh(args.root.resolve()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
