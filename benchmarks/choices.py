"""The design choices the recipe leaves open, each measured against its default on one held-out domain.

    python -m benchmarks.choices --epochs 3 --domain "Hamamatsu XR"

Imbalance handling and attention refinement are compared on ERM, the alignment form on
ERM+Align, so each row changes one thing. Baselines are the ablation's own runs where they
exist (same budget, seed and split), so nothing is trained twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amf.atomic import write_atomic
from amf.provenance import describe_machine
from benchmarks.ablation import DOMAINS, _claim, run_dir, run_one

# name -> (ablation arm it modifies, extra overrides, the question it answers)
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "balanced sampler + CE (default)": ("ERM", [], "imbalance"),
    "shuffle + class-weighted CE": ("ERM", ["optim.sampler=shuffle", "optim.loss=weighted_ce"], "imbalance"),
    "shuffle + focal loss (γ=2)": ("ERM", ["optim.sampler=shuffle", "optim.loss=focal"], "imbalance"),
    "CBAM channel+spatial (default)": ("ERM", [], "attention"),
    "gated attention pooling": ("ERM", ["model.attention=attnpool"], "attention"),
    "CORAL (default)": ("ERM+Align", [], "alignment"),
    "class-conditional MMD": ("ERM+Align", ["align.kind=mmd"], "alignment"),
}


def _dir(root: Path, name: str, arm: str, extra: list[str], dom: str) -> Path:
    if not extra:
        return run_dir(root, arm, dom, 0)  # the ablation's own run is the baseline
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return root / "choices" / f"{slug}-{dom.lower().replace(' ', '-')}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--domain", default="Hamamatsu XR", choices=list(DOMAINS))
    parser.add_argument("--root", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/choices.md"))
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra training overrides, e.g. run.threads=1")
    args = parser.parse_args()
    rows = []
    for name, (arm, extra, question) in VARIANTS.items():
        out = _dir(args.root, name, arm, extra, args.domain)
        if not args.table_only and not (out / "summary.json").is_file() and _claim(out):
            run_one(out.parent, arm, args.domain, 0, args.epochs, [*extra, *args.extra], out=out)
        if (out / "summary.json").is_file():
            res = json.loads((out / "summary.json").read_text())["results"]["student"]
            t, v = res["test"]["overall"], res["val"]["overall"]
            rows.append(f"| {question} | {name} | {t['balanced_accuracy']:.3f} | {t['roc_auc']:.3f} | "
                        f"{t['sensitivity']:.3f} | {t['specificity']:.3f} | {v['roc_auc']:.3f} |")
        else:
            rows.append(f"| {question} | {name} | not run | | | | |")
    text = "\n".join([
        f"# Design choices, measured on held-out {args.domain} (AMi-Br)", "",
        f"Machine: {describe_machine()}.", "",
        f"One seed, {args.epochs} epochs each, the rest as in the ablation (`benchmarks/ablation.py`). "
        "Test = the held-out "
        "domain at the validation-picked threshold; val AUC = the in-domain validation split.", "",
        "| question | variant | test BA | test AUC | sensitivity | specificity | val AUC |",
        "|---|---|---|---|---|---|---|", *rows, ""])
    write_atomic(args.out, lambda tmp: tmp.write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
