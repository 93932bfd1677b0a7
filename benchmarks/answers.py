"""What the validation drivers have answered, as training overrides; together they are the recipe that
ships next. Each answer names the generated table it comes from, and test_ablation_report.py checks,
from the raw results, that the table still calls it higher than its default.

The default config stays the recipe that trained ``model/`` until the next model ships (its card and
the default must agree); then these move into ``training/config.py`` and the list empties.

    python -m benchmarks.answers          # SHIPS_NEXT as overrides, for the queues' command lines
    python -m benchmarks.answers --slug   # its folder name, e.g. sampler-shuffle-loss-weighted-ce-center-crop-64
"""

from __future__ import annotations

import sys

# benchmarks/results/choices.md, imbalance: shuffle + class-weighted CE, +0.037 validation AUC over the
# balanced sampler with CE (two seeds each, beyond both spreads). Later questions and the studies build on it.
IMBALANCE_ANSWER = ["optim.sampler=shuffle", "optim.loss=weighted_ce"]

# benchmarks/results/crop.md: the central 64 px upscaled to 128, +0.013 validation AUC over the full
# patch (two seeds each, beyond both spreads; 80 px +0.009, within them).
CROP_ANSWER = ["data.center_crop=64"]

SHIPS_NEXT = [*IMBALANCE_ANSWER, *CROP_ANSWER]


def recipe_slug(overrides: list[str]) -> str:
    """A folder name for results made with ``overrides``: ``sampler-shuffle-loss-weighted-ce-center-crop-64``."""
    words = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in (o.split("=", 1) for o in overrides)]
    return "".join(c if c.isalnum() or c == "." else "-" for c in "-".join(words).lower())


if __name__ == "__main__":
    print(recipe_slug(SHIPS_NEXT) if sys.argv[1:] == ["--slug"] else " ".join(SHIPS_NEXT))
