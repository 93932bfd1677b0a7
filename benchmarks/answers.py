"""What the validation drivers have answered, as training overrides on the first shipped model's
recipe (``BASE_CONFIG``). Each answer names the generated table it comes from, and
test_ablation_report.py checks, from the raw results, that the table still calls it higher than its default.

Every answer is an override on one fixed base, so a recipe's folder name (``recipe_slug``) and its
runs' config digests stay the same when ``training/config.py``'s defaults move on with a shipped model.
``SHIPPED`` is what the shipped model/ took; the defaults are ``BASE_CONFIG`` with it (a test checks
that they resolve to the same config). An answer that lands after a ship joins ``SHIPS_NEXT`` only,
until the next model ships with it.

    python -m benchmarks.answers          # SHIPS_NEXT as overrides, for the queues' command lines
    python -m benchmarks.answers --base   # the config those overrides apply to
    python -m benchmarks.answers --slug   # its folder name, e.g. sampler-shuffle-loss-weighted-ce-center-crop-64
    python -m benchmarks.answers --ablation   # where its leave-one-domain-out ablation's raw results go
    python -m benchmarks.answers --transfer   # where its threshold-transfer check goes (beside them)
    python -m benchmarks.answers --erm-from   # the shipped ablation whose ERM runs it would repeat, if any
    python -m benchmarks.answers --against    # the shipped ablation it is compared with, if it is not that one
    python -m benchmarks.answers --ablation augment.hed_sigma=0.2   # the same of SHIPPED with a change to check
"""

from __future__ import annotations

import argparse
from pathlib import PurePosixPath

import yaml

from training.config import RECIPE_PARTS

# Balanced sampler, plain CE, the full patch: the recipe of the first shipped model, on which every
# validation question and study in benchmarks/results/ was asked.
BASE_CONFIG = "training/configs/model-v1.yaml"

# benchmarks/results/choices.md, imbalance: shuffle + class-weighted CE, +0.037 validation AUC over the
# balanced sampler with CE (two seeds each, beyond both spreads). Later questions and the studies build on it.
IMBALANCE_ANSWER = ["optim.sampler=shuffle", "optim.loss=weighted_ce"]

# benchmarks/results/crop.md: the central 64 px upscaled to 128, +0.013 validation AUC over the full
# patch (two seeds each, beyond both spreads; 80 px +0.009, within them).
CROP_ANSWER = ["data.center_crop=64"]

# benchmarks/results/choices.md, alignment: class-conditional MMD (standardized, weight 0.3) in place of
# CORAL, 0.866 ± 0.007 validation AUC against CORAL's 0.829 ± 0.001 at the same weight (+0.036, beyond
# both spreads) and no different from no alignment (0.865 ± 0.010), while its term still sends the
# backbone's last stage 0.12 of the supervised gradient (2026-12-07). Asked on the imbalance answer.
ALIGNMENT_ANSWER = ["align.kind=mmd"]

# Settings whose point is a domain shift are chosen across the training domains, not on in-domain
# validation, which cannot judge them (benchmarks/README.md, "Choosing across the training domains"): that way of
# choosing, nested so that a held-out domain never took part in its own pick, held out no worse than the
# shipped recipe on any domain and better on the mean (benchmarks/results/nested_lodo.md). Across all three
# AMi-Br domains (benchmarks/results/held_out.md), σ 0.2 scores +0.018 mean held-out BA over 0.05, beyond
# the seed spread, and σ 0.4 +0.011: the best candidate higher than the shipped recipe. In-domain validation
# saw no difference (stain.md; the 5-fold ensembles out of fold, ensemble-...-hed-sigma-0.2/against_shipped.md).
STAIN_ANSWER = ["augment.hed_sigma=0.2"]
# Shipped settings chosen on the leave-one-domain-out runs themselves (across all three domains, after the
# nested check showed that way of choosing holds out): those runs' held-out scores are the selection's own,
# optimistic for the recipe it picked, which every page quoting them says.
CHOSEN_HELD_OUT = {"augment.hed_sigma=0.2": "the best mean held-out balanced accuracy of the four recipes in "
                                            "`benchmarks/results/held_out.md`"}
# Not an answer: Reinhard stain normalisation at input (data.stain_norm=reinhard), checked by the same nested
# rule against σ 0.2, was picked for TUPAC16 and XR held out but scored -0.029 on TUPAC16 held out, beyond the
# spread: not met (benchmarks/results/nested_lodo-sampler-shuffle-loss-weighted-ce-center-crop-64-hed-sigma-0.2.md).

SHIPPED = [*IMBALANCE_ANSWER, *CROP_ANSWER, *STAIN_ANSWER]  # what model/ and training/config.py's defaults took
# The alignment answer is withdrawn by the same rule: across the training domains its Full arm scores
# -0.010 mean held-out BA against CORAL's, beyond the seed spread (held_out.md), though validation picked it.
WITHDRAWN = [ALIGNMENT_ANSWER]
SHIPS_NEXT = [*SHIPPED]  # the answers not shipped yet follow SHIPPED


def with_change(change: list[str]) -> list[str]:
    """The shipped recipe with ``change`` (a candidate's overrides): a key the recipe sets already takes the
    candidate's value in its place, so the folder is named for the recipe it trains. A change the
    shipped recipe has already is no candidate: refused, since it would retrain what ships."""
    same = [c for c in change if c in SHIPPED]
    if same:
        raise ValueError(f"{same[0]} is in the shipped recipe already; a candidate changes it")
    keys = {c.split("=", 1)[0] for c in change}
    return [o for o in SHIPPED if o.split("=", 1)[0] not in keys] + list(change)


def chosen_held_out(config: dict) -> str:
    """Where a run's ``config`` (nested, as a run or a card records it) has settings of ``CHOSEN_HELD_OUT``:
    the sentence that says its leave-one-domain-out scores are the selection's own; '' otherwise."""
    def has(setting: str) -> bool:
        key, value = setting.split("=", 1)
        section, name = key.split(".", 1)
        return (config.get(section) or {}).get(name) == yaml.safe_load(value)

    had = [f"`{setting}` ({how})" for setting, how in CHOSEN_HELD_OUT.items() if has(setting)]
    if not had:
        return ""
    return ("**Not an untouched estimate:** this recipe's " + "; ".join(had) + " was chosen on these "
            "leave-one-domain-out runs, so their held-out numbers are the selection's own and optimistic for it. "
            "The nested check (`benchmarks/results/nested_lodo.md`), in which no domain took part in its own pick, "
            "is the estimate a held-out domain never saw.")


def recipe_slug(overrides: list[str]) -> str:
    """A folder name for results made with ``overrides``: ``sampler-shuffle-loss-weighted-ce-center-crop-64``."""
    words = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in (o.split("=", 1) for o in overrides)]
    return "".join(c if c.isalnum() or c == "." else "-" for c in "-".join(words).lower())


def ablation_results(overrides: list[str]) -> str:
    """Where the leave-one-domain-out ablation of ``BASE_CONFIG`` with ``overrides`` keeps its raw results,
    relative to the checkout: the base's own in ``benchmarks/results/ablation``, another recipe's in a
    folder named for it (benchmarks/cpu_plan.sh's lodo stage)."""
    if not overrides:
        return "benchmarks/results/ablation"
    return f"benchmarks/results/ablation-{recipe_slug(overrides)}/ablation"


def transfer_results(overrides: list[str]) -> str:
    """Where ``benchmarks.threshold_transfer`` keeps its check on that ablation's seed pairs: beside the
    ablation's folder (the base's: ``benchmarks/results/threshold_transfer.json``), so that a recipe's
    check never overwrites another's."""
    return str(PurePosixPath(ablation_results(overrides)).parent / "threshold_transfer.json")


def shipped_source(overrides: list[str]) -> str:
    """The shipped recipe's ablation folder, which another recipe's ablation table is set against
    (``benchmarks.ablation --against``); empty for the shipped recipe itself."""
    return "" if overrides == SHIPPED else ablation_results(SHIPPED)


def erm_source(overrides: list[str]) -> str | None:
    """The shipped recipe's ablation folder when ``overrides`` add to ``SHIPPED`` only settings of parts
    that ERM switches off (``align.kind=mmd``, say): its ERM runs are this recipe's ERM runs, which the
    ablation then borrows (``--erm-from``, checked run by run) instead of training again. None otherwise."""
    if overrides[:len(SHIPPED)] != SHIPPED or overrides == SHIPPED:
        return None
    keys = [o.split("=", 1)[0] for o in overrides[len(SHIPPED):]]
    if all(k.split(".", 1)[0] in RECIPE_PARTS and not k.endswith(".enabled") for k in keys):
        return ablation_results(SHIPPED)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--base", action="store_true", help="print the config the answers apply to")
    what.add_argument("--slug", action="store_true", help="print the recipe's folder name")
    what.add_argument("--ablation", action="store_true", help="print where the recipe's ablation results go")
    what.add_argument("--transfer", action="store_true",
                      help="print where the threshold-transfer check of the recipe's ablation goes")
    what.add_argument("--erm-from", action="store_true",
                      help="print the ablation folder whose ERM runs the recipe's ERM would repeat (empty if none)")
    what.add_argument("--against", action="store_true",
                      help="print the shipped recipe's ablation folder, which the recipe's is compared with (empty "
                           "when the recipe is what shipped)")
    parser.add_argument("change", nargs="*", metavar="KEY=VALUE",
                        help="the recipe is SHIPPED with this change (a candidate to check) instead of SHIPS_NEXT")
    args = parser.parse_args(argv)
    bad = [c for c in args.change if "=" not in c or c.startswith("=")]
    if bad:
        parser.error(f"a change is KEY=VALUE, not {bad[0]!r}")
    try:
        recipe = with_change(args.change) if args.change else SHIPS_NEXT
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    print(BASE_CONFIG if args.base else recipe_slug(recipe) if args.slug
          else ablation_results(recipe) if args.ablation
          else transfer_results(recipe) if args.transfer
          else erm_source(recipe) or "" if args.erm_from
          else shipped_source(recipe) if args.against else " ".join(recipe))


if __name__ == "__main__":
    main()
