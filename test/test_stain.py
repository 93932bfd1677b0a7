"""amf/stain.py: Reinhard stain normalisation per patch, the same in training and inference, recorded in model.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model_dir

from amf.card import format_needed, read_card
from amf.errors import ModelDirError
from amf.stain import MIN_STD, StainTarget, fit_target, lab_stats, lab_to_rgb, normalize_stains, rgb_to_lab

TARGET = StainTarget((62.0, 18.0, -9.0), (14.0, 7.0, 5.0))


def tissue(seed: int, shape: tuple[int, int] = (128, 128), cast: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A pinkish patch with a dark blob, shifted by a colour cast."""
    rng = np.random.default_rng(seed)
    base = np.array([225, 160, 200]) + np.array(cast)
    img = base + rng.normal(0, 12, (*shape, 3))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 6) ** 2
    img[blob] = np.array([90, 40, 120]) + np.array(cast) + rng.normal(0, 8, (int(blob.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_lab_conversion_is_cielab_and_round_trips() -> None:
    extremes = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8)
    lab = rgb_to_lab(extremes)
    np.testing.assert_allclose(lab[0, 0], [100, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[0, 1], [0, 0, 0], atol=0.01)
    np.testing.assert_allclose(lab[0, 2], [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65
    every = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(lab_to_rgb(rgb_to_lab(every)), every)


def test_each_patch_lands_on_the_target_whatever_its_cast() -> None:
    patches = np.stack([tissue(0), tissue(1, cast=(-40, 10, -30)), tissue(2, cast=(20, -30, 25))])
    before = lab_stats(patches)
    assert np.ptp(before[:, 0, 1]) > 10  # the casts differ in a*
    after = lab_stats(normalize_stains(patches, before, TARGET))
    np.testing.assert_allclose(after[:, 0], np.tile(TARGET.mean, (3, 1)), atol=0.6)
    np.testing.assert_allclose(after[:, 1], np.tile(TARGET.std, (3, 1)), atol=0.6)
    assert np.ptp(after[:, 0, 1]) < 0.5  # the casts are gone


def test_a_flat_page_is_shifted_not_stretched() -> None:
    flat = np.full((1, 32, 32, 3), 240, np.uint8)
    flat[0, 0, 0] = 236  # one speck: a near-zero spread must not blow it up to the target's contrast
    lab_in = rgb_to_lab(flat)[0, ..., 0]
    assert lab_stats(flat)[0, 1, 0] < 0.1 * MIN_STD
    lab_out = rgb_to_lab(normalize_stains(flat, lab_stats(flat), TARGET))[0]
    speck_in, speck_out = lab_in[0, 0] - lab_in[5, 5], lab_out[0, 0, 0] - lab_out[5, 5, 0]
    assert abs(speck_out) <= abs(speck_in) * TARGET.std[0] / MIN_STD + 1  # unfloored: ×400
    np.testing.assert_allclose(lab_out[5, 5], TARGET.mean, atol=1.0)


def test_the_target_is_the_mean_of_the_patches_statistics() -> None:
    stats = lab_stats(np.stack([tissue(3), tissue(4, cast=(10, 0, -10))]))
    target = fit_target(stats)
    np.testing.assert_allclose(target.mean, stats[:, 0].mean(0), atol=1e-4)
    np.testing.assert_allclose(target.std, stats[:, 1].mean(0), atol=1e-4)
    with pytest.raises(ValueError, match="no patches"):
        fit_target(stats[:0])


def test_training_and_inference_prepare_the_same_pixels(tmp_path: Path) -> None:
    """An odd-sized page with a centre crop: the statistics come from the whole fitted patch on both sides."""
    from PIL import Image

    from amf.predict import Predictor
    from training.data import apply_stain_target, fit_stain_target, read_manifests

    (tmp_path / "images").mkdir()
    pages = [tissue(5, (150, 140), (15, -20, 5)), tissue(6, (120, 131), (-25, 10, 10))]
    for i, page in enumerate(pages):
        Image.fromarray(page).save(tmp_path / "images" / f"p{i}.png")
    (tmp_path / "m.csv").write_text("image_id,filename,majority\np0.png,s1,AMF\np1.png,s2,NMF\n")
    data = read_manifests([str(tmp_path / "m.csv")], [], [], 128, None, center_crop=72, stain_norm="reinhard")
    target = fit_stain_target(data, np.arange(2))
    apply_stain_target(data, target)
    with pytest.raises(ValueError, match="stain-normalised already"):
        apply_stain_target(data, target)  # twice would map the mapped patches again
    model = make_model_dir(tmp_path / "model", center_crop=72, stain_norm=target.to_card())
    assert read_card(model)["format_version"] == 3
    infer_side = Predictor.from_dir(model, device="cpu").prepare(pages)
    assert np.array_equal(data.images, infer_side)
    plain = read_manifests([str(tmp_path / "m.csv")], [], [], 128, None, center_crop=72).images
    assert not np.array_equal(plain, infer_side)
    assert data.subset(np.array([1])).stain_target == target


def test_the_card_records_the_target_and_refuses_a_damaged_one(tmp_path: Path) -> None:
    record = TARGET.to_card()
    assert StainTarget.from_card(record) == TARGET and StainTarget.from_card(None) is None
    assert format_needed({"stain_norm": record}) == 3 and format_needed({"center_crop": 64}) == 2
    model = make_model_dir(tmp_path / "m", stain_norm=record)
    card = read_card(model)
    assert card["stain_norm"] == record and card["format_version"] == 3
    for bad in ({"method": "macenko"}, {**record, "target_std": [1, 0, 1]}, {**record, "target_mean": [1, 2]}, "on"):
        (model / "model.json").write_text(json.dumps({**card, "stain_norm": bad}))
        with pytest.raises(ModelDirError, match="stain_norm") as err:
            read_card(model)
        assert "\n" not in str(err.value)


def test_a_format_2_reader_refuses_a_stain_normalised_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before format 3 a reader would have ignored stain_norm and scored unnormalised pixels."""
    import amf.card

    model = make_model_dir(tmp_path / "m", stain_norm=TARGET.to_card())
    monkeypatch.setattr(amf.card, "FORMAT_VERSION", 2)
    with pytest.raises(ModelDirError, match="has format 3, but this code reads formats up to 2"):
        amf.card.read_card(model)


def test_the_setting_is_checked_and_off_keeps_every_digest() -> None:
    from training.config import load_config

    with pytest.raises(ValueError, match=r"data\.stain_norm must be one of none, reinhard"):
        load_config(None, ["data.stain_norm=macenko"])
    assert load_config(None, ["data.stain_norm=none"]).digest() == load_config(None, []).digest()
    assert load_config(None, ["data.stain_norm=reinhard"]).digest() != load_config(None, []).digest()


def test_a_run_fits_its_target_without_the_held_out_domain(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_training import _train_args, make_dataset

    from training.data import fit_stain_target, make_split, read_manifests
    from training.train import main

    manifest = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    args = [a for a in _train_args(manifest, out, "optim.epochs=1", "data.center_crop=0", "data.stain_norm=reinhard",
                                   "data.split=lodo", "data.lodo_column=Scanner", "data.lodo_value=Aperio CS2")]
    assert main(args) == 0
    card = read_card(out / "model")
    data = read_manifests([str(manifest)], [], ["Scanner"], 64, None, stain_norm="reinhard")
    split = make_split(data, "lodo", val_fraction=0.25, lodo_column="Scanner", lodo_value="Aperio CS2")
    kept = fit_stain_target(data, np.concatenate([split.train, split.val]))
    assert StainTarget.from_card(card["stain_norm"]) == kept != fit_stain_target(data, np.arange(len(data)))
    assert card["format_version"] == 3 and "Reinhard" in card["preprocessing"]
