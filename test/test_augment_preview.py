"""training/augment_preview.py: the stain jitter shown on real rows of a manifest, one row per domain."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training import augment_preview


def manifest(root: Path) -> Path:
    """Four patches: two scanners, and one row with no scanner that falls back to its origin."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "filename", "majority", "Scanner", "Origin"])
        for i, (scanner, origin) in enumerate([("XR", "UMC"), ("XR", "UMC"), ("S360", "UMC"), ("", "TUPAC16")]):
            page = rng.integers(40, 230, (32, 32, 3)).astype(np.uint8)
            Image.fromarray(page).save(root / "images" / f"p{i}.png")
            writer.writerow([f"p{i}.png", f"s{i}", "AMF" if i % 2 else "NMF", scanner, origin])
    return root / "manifest.csv"


def test_one_row_per_domain_with_the_fallback_column(tmp_path: Path) -> None:
    rows = augment_preview.domain_patches(str(manifest(tmp_path)), ["Scanner", "Origin"], 1, seed=0)
    assert list(rows) == ["XR", "S360", "TUPAC16"] and all(len(p) == 1 for p in rows.values())
    assert rows["TUPAC16"][0].name == "p3.png"


def test_no_jitter_is_the_picture_itself_and_the_draws_share_their_random_numbers() -> None:
    images = torch.rand(2, 3, 16, 16) * 0.8 + 0.1
    draws = augment_preview.stain_draws(images, [0.0, 0.3], draws=2, seed=0, bias=0.0)
    assert draws[0.0].shape == (2, 2, 3, 16, 16)
    assert torch.allclose(draws[0.0], images[:, None].expand_as(draws[0.0]), atol=1e-4)  # the HED round trip
    assert not torch.allclose(draws[0.3], draws[0.0], atol=1e-3)
    again = augment_preview.stain_draws(images, [0.3], draws=2, seed=0, bias=0.0)
    assert torch.equal(again[0.3], draws[0.3])  # reseeded per sigma: a column pair differs only in the range


def test_the_command_writes_the_figure_and_refuses_bad_settings(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = manifest(tmp_path)
    out = tmp_path / "preview.jpg"
    assert augment_preview.main(["--manifest", str(csv_path), "--sigma", "0.05", "0.4", "--draws", "2",
                                 "--size", "32", "--out", str(out)]) == 0
    assert Image.open(out).format == "JPEG"
    with pytest.raises(SystemExit):
        augment_preview.main(["--manifest", str(csv_path), "--sigma", "1.0"])
    assert "each --sigma lies in [0, 1)" in capsys.readouterr().err
    assert augment_preview.main(["--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and not (tmp_path / "x.png").exists()


def test_stain_densities_read_back_the_stains_a_picture_was_made_of() -> None:
    import math

    from training.augment import _RGB_FROM_HED, stain_densities

    stains = torch.tensor([[0.05, 0.02, 0.0], [0.01, 0.04, 0.01]])
    rgb = torch.exp(stains @ _RGB_FROM_HED * math.log(1e-6))  # rgb2hed's inverse, as the jitter writes back
    images = rgb.view(2, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(stain_densities(images), stains, atol=1e-5)


def test_the_rows_are_labelled_with_their_domains_mean_stain_densities(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert augment_preview.main(["--manifest", str(manifest(tmp_path)), "--draws", "1", "--size", "32",
                                 "--density-patches", "5", "--out", str(tmp_path / "p.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["XR", "S360", "TUPAC16"]
    assert "mean stain density over 2 patches" in lines[0]  # XR has two; asked for five


def test_stain_normalisation_maps_every_domain_onto_one_target_before_the_jitter(tmp_path: Path) -> None:
    from amf.stain import lab_stats

    rng = np.random.default_rng(1)
    casts = {"XR": (30, -20, 10), "S360": (-30, 10, -20)}
    decoded = {d: torch.from_numpy(np.clip(rng.normal(150, 30, (3, 24, 24, 3)) + c, 0, 255).astype(np.uint8))
               .permute(0, 3, 1, 2).float() / 255 for d, c in casts.items()}
    normed = augment_preview.reinhard_rows(decoded)
    means = {d: lab_stats((x.permute(1, 2, 0)[None] * 255).round().to(torch.uint8).numpy())[0, 0]
             for d, x in normed.items()}
    raw = {d: lab_stats((x[:1].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())[0, 0]
           for d, x in decoded.items()}
    assert np.abs(raw["XR"] - raw["S360"]).max() > 10 > 1 > np.abs(means["XR"] - means["S360"]).max()
    out = tmp_path / "preview.png"
    assert augment_preview.main(["--manifest", str(manifest(tmp_path / "m")), "--sigma", "0.2", "--draws", "1",
                                 "--size", "32", "--stain-norm", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
