"""The full recipe must learn: a short run on a trivially separable synthetic set reaches a high
validation AUC, and the same run with the supervised loss's sign flipped does not.

Checks that only look at files and resumes pass for a recipe that learns the wrong thing; this one
fails for a flipped loss, a label read upside down, a detached head or a P(normal) score.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import training.recipe

SIZE = 64
MIN_AUC = 0.95


def bright_dot_dataset(root: Path, n: int = 320, seed: int = 0) -> Path:
    """Dark noise patches; atypical ones carry a bright disc in the middle. 8 slides with both classes,
    two scanners and an unknown one, two origins: every part of the recipe has something to act on."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (yy - SIZE // 2) ** 2 + (xx - SIZE // 2) ** 2 < (SIZE // 3) ** 2
    rows = []
    for i in range(n):
        label = i % 2
        img = rng.integers(40, 100, (SIZE, SIZE, 3)).astype(np.uint8)
        if label:
            img[disc] = 255
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        slide = i % 8
        rows.append({"image_id": f"{i}.png", "filename": f"{slide:03d}.tiff",
                     "Scanner": ["Scanner A", "Scanner B", ""][slide % 3], "Origin": ["Lab U", "Lab V"][slide % 2],
                     "majority": "AMF" if label else "NMF"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def train_args(manifest: Path, out: Path) -> list[str]:
    """The full recipe (mix, align, distil on, as by default), small and from scratch."""
    return [
        f"data.manifests=[{manifest}]",
        f"data.input_size={SIZE}",
        "data.val_fraction=0.25",
        "data.cache_dir=''",
        f"run.out={out}",
        "run.tta=none",
        "run.progress=false",
        "model.pretrained=none",
        "model.backbone=mobilenetv2_050",
        "mix.stages=[blocks.1,blocks.3]",
        "optim.epochs=2",
        "optim.batch_size=16",
        "optim.lr=0.005",
    ]


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["recipe", "control-flipped-loss"])
def test_the_full_recipe_learns_a_trivial_signal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 sign: float) -> None:
    from training.train import main

    if sign < 0:  # the control: the same run with the supervised loss's sign flipped must not pass
        original = training.recipe.supervised_loss
        monkeypatch.setattr(training.recipe, "supervised_loss", lambda *a, **k: -original(*a, **k))
    manifest = bright_dot_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert main(train_args(manifest, out)) == 0
    card = json.loads((out / "model" / "model.json").read_text())
    recipe = card["provenance"]["recipe"]
    assert recipe["mix"] and recipe["align"] and recipe["distil"] is True
    assert recipe["align"]["labels"] == ["Scanner", "Origin"]
    val = card["metrics"]["student"]["val"]["overall"]
    assert val["n"] == 80 and val["n_atypical"] == 40
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"supervised", "align", "distil"} <= r.keys() for r in steps if r["kind"] == "step")
    if sign > 0:
        assert val["roc_auc"] >= MIN_AUC, val
        assert card["metrics"]["teacher"]["val"]["overall"]["roc_auc"] >= 0.9  # the EMA teacher follows
    else:
        assert val["roc_auc"] <= 0.5, val  # far below MIN_AUC: the check above tells the two apart
