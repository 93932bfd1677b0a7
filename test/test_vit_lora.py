"""ViT backbones and LoRA: the registry, tokens as a map, Mix on tokens, the shared-backbone teacher,
and the whole path (train with LoRA, merge, write model/, process.py without peft) on a tiny random ViT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, synthetic_pages, write_job
from test_training import _train_args, make_dataset

from amf.backbones import ALIASES, HUB_PREFIX, REGISTRY, model_input, resolve_backbone
from amf.errors import ModelDirError
from amf.network import create_model
from training.config import load_config

# A small width every registry entry accepts: 96 × the SwiGLU ratios (5.33334, 5.3375) is even.
SMALL = {"depth": 2, "embed_dim": 96, "num_heads": 2}
TINY_VIT = ["model.backbone=vit_tiny_patch16_224", "model.backbone_kwargs.img_size=64",
            "model.backbone_kwargs.depth=4", "model.backbone_kwargs.reg_tokens=2"]


# -- the registry ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entry_builds_offline_at_reduced_size(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each entry's timm kwargs are accepted by its architecture (random weights, 2 blocks, width 96)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = resolve_backbone(name, SMALL)
    assert not spec.architecture.startswith(HUB_PREFIX)
    assert json.loads(json.dumps(spec.kwargs)) == spec.kwargs  # what model.json records is plain JSON
    model = create_model(spec.architecture, backbone_kwargs=spec.kwargs).eval()
    body = model.backbone
    assert model.token_backbone and len(body.blocks) == 2 and model.num_features == 96
    side = spec.input_size
    with torch.no_grad():
        features = model.forward_features(torch.zeros(1, 3, side, side))
    grid = side // body.patch_embed.patch_size[0]
    assert features.shape == (1, 96, grid, grid)
    reg = spec.kwargs.get("reg_tokens", 4 if "reg4" in spec.architecture or "dinov3" in spec.architecture else 0)
    assert body.num_prefix_tokens == 1 + reg
    assert model_input(spec, body, 128).resize_to == side  # MIDOG patches go to the native size


def test_registry_carries_the_published_settings() -> None:
    uni2 = resolve_backbone("hf-hub:MahmoodLab/UNI2-h")
    assert uni2.architecture == "vit_giant_patch14_224" and uni2.kwargs["reg_tokens"] == 8
    assert uni2.kwargs["mlp_layer"] == "swiglu_packed" and uni2.kwargs["act_layer"] == "silu"
    assert uni2.kwargs["embed_dim"] == 1536 and uni2.kwargs["depth"] == 24 and uni2.kwargs["no_embed_class"]
    virchow2 = resolve_backbone(ALIASES["virchow2"])
    assert virchow2.architecture == "vit_huge_patch14_224" and virchow2.kwargs["reg_tokens"] == 4
    hopt = resolve_backbone("H-optimus-0")  # an alias, any case
    assert hopt.architecture == "vit_giant_patch14_reg4_dinov2" and hopt.mean == (0.707223, 0.578729, 0.703617)
    assert hopt.weights == "hf-hub:bioptimus/H-optimus-0" and hopt.kwargs["dynamic_img_size"] is False
    assert resolve_backbone("hf-hub:MahmoodLab/UNI2-h", {"depth": 2}).kwargs["depth"] == 2  # kwargs on top
    plain = resolve_backbone("tf_efficientnet_lite0")
    assert (plain.architecture, plain.kwargs, plain.registered) == ("tf_efficientnet_lite0", {}, False)


def test_unknown_hub_names_and_reserved_kwargs_are_refused() -> None:
    with pytest.raises(ValueError, match="not in the backbone registry"):
        resolve_backbone("hf-hub:someone/unknown")
    with pytest.raises(ValueError, match="may not set num_classes"):
        resolve_backbone("vit_tiny_patch16_224", {"num_classes": 3})
    with pytest.raises(ModelDirError, match="offline"):
        create_model("hf-hub:MahmoodLab/UNI2-h")
    with pytest.raises(ModelDirError, match="no_such_kwarg"):
        create_model("vit_tiny_patch16_224", backbone_kwargs={"no_such_kwarg": 1})


# -- tokens as a map ---------------------------------------------------------------------------------
def test_patch_tokens_become_the_map_and_prefix_tokens_are_dropped() -> None:
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", backbone_kwargs={"img_size": 64, "depth": 1, "reg_tokens": 3,
                                                                  "dynamic_img_size": True}).eval()
    x = torch.randn(2, 3, 48, 80)  # dynamic size, not square: a 3×5 grid
    with torch.no_grad():
        tokens = model.backbone.forward_features(x)
        fmap = model.forward_features(x)
    assert tokens.shape == (2, 4 + 15, 192) and fmap.shape == (2, 192, 3, 5)
    for i, j in ((0, 0), (1, 4), (2, 3)):
        assert torch.equal(fmap[:, :, i, j], tokens[:, 4 + i * 5 + j])
    assert fmap.stride(1) == 1  # channels innermost: a view of the tokens, no copy
    cnn = create_model("mobilenetv2_050").eval()
    assert not cnn.token_backbone
    with torch.no_grad():
        assert torch.equal(cnn.forward_features(x), cnn.backbone.forward_features(x))


def test_resize_lives_in_preprocessing_and_only_where_needed() -> None:
    from amf.preprocess import ModelInput, normalize

    spec = resolve_backbone("vit_tiny_patch16_224", {"img_size": 64})
    vit = create_model(spec.architecture, backbone_kwargs=spec.kwargs)
    assert model_input(spec, vit.backbone, 48).resize_to == 64
    assert model_input(spec, vit.backbone, 64).resize_to is None  # already native
    assert model_input(spec, vit.backbone, 48, resize=0).resize_to is None
    assert model_input(spec, vit.backbone, 48, resize=96).resize_to == 96
    cnn = create_model("mobilenetv2_050")
    assert model_input(resolve_backbone("mobilenetv2_050"), cnn.backbone, 48) == ModelInput()  # as before
    pages = torch.from_numpy(synthetic_pages(2, 48))
    assert torch.equal(ModelInput()(pages), normalize(pages))
    resized = ModelInput(resize_to=64)(pages)
    assert resized.shape == (2, 3, 64, 64) and resized.is_contiguous(memory_format=torch.channels_last)


# -- Mix on tokens -----------------------------------------------------------------------------------
def test_token_mixstyle_keeps_prefix_tokens_and_the_normalised_content() -> None:
    from training.mixstyle import MixStyle

    torch.manual_seed(0)
    mix = MixStyle(p=1.0, alpha=0.3, prefix_tokens=3).train()
    x = torch.randn(6, 3 + 16, 8) * torch.linspace(0.5, 3, 6).view(6, 1, 1) + torch.arange(6.0).view(6, 1, 1)
    out = mix(x)
    assert out.shape == x.shape and torch.equal(out[:, :3], x[:, :3])  # class and register tokens untouched
    assert not torch.allclose(out[:, 3:], x[:, 3:])

    def standardised(t: torch.Tensor) -> torch.Tensor:
        return (t - t.mean(1, keepdim=True)) / (t.var(1, keepdim=True) + 1e-6).sqrt()

    # only the per-sample, per-channel statistics over the patch tokens move
    assert torch.allclose(standardised(out[:, 3:]), standardised(x[:, 3:]), atol=1e-4)
    assert torch.equal(mix.eval()(x), x)


def test_mixers_on_a_vit_hook_blocks_in_token_mode() -> None:
    from training.mixstyle import attach_style_mixers

    model = create_model("vit_tiny_patch16_224", backbone_kwargs={"img_size": 32, "depth": 3, "reg_tokens": 4})
    mixers = attach_style_mixers(model, ["blocks.0", "blocks.2"], p=1.0)
    assert all(m.prefix_tokens == 5 for m in mixers.mixers.values())
    model.train()(torch.randn(4, 3, 32, 32))  # runs with the hooks
    mixers.remove()


# -- LoRA and the shared-backbone teacher --------------------------------------------------------------
def _lora_vit(rank: int = 4):
    from training.lora import attach_lora

    cfg = load_config(None, [f"model.lora.rank={rank}"]).model.lora
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", backbone_kwargs={"img_size": 32, "depth": 2})
    return model, attach_lora(model, cfg)


def test_lora_freezes_the_backbone_and_trains_adapters_refinement_and_head() -> None:
    model, adapters = _lora_vit()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or not n.startswith("backbone.") for n in trainable)
    assert any(n.startswith("refine.") for n in trainable) and "classifier.weight" in trainable
    assert len(adapters.adapted_modules) == 2 * 4  # qkv, proj, fc1, fc2 in each of 2 blocks
    report = adapters.report()
    assert report["rank"] == 4 and 0 < report["trainable_parameters"] < report["total_parameters"] / 5


def test_lora_needs_a_vit() -> None:
    from training.lora import attach_lora

    with pytest.raises(ValueError, match="ViT"):
        attach_lora(create_model("mobilenetv2_050"), load_config(None, ["model.lora.rank=4"]).model.lora)


def test_lora_settings_without_a_rank_are_refused() -> None:
    with pytest.raises(ValueError, match="do nothing"):
        load_config(None, ["model.lora.alpha=8"])
    cfg = load_config(None, ["model.lora.rank=8", "model.lora.target_modules=[attn.qkv]"])
    assert cfg.model.lora.rank == 8 and cfg.model.lora.target_modules == ["attn.qkv"]
    assert cfg.digest() != load_config(None, []).digest()


def test_shared_teacher_holds_only_the_trainable_parameters() -> None:
    from training.distil import EmaTeacher
    from training.mixstyle import attach_style_mixers

    model, _ = _lora_vit()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    teacher = EmaTeacher(model, decay=0.9)
    assert teacher.shared
    held = sum(p.numel() for p in teacher.parameters())
    assert held == sum(p.numel() for p in trainable.values())  # no copy of the frozen backbone
    assert not any(k.startswith("module.student") for k in teacher.state_dict())
    attach_style_mixers(model, ["blocks.0"], p=1.0)
    x = torch.randn(3, 3, 32, 32)
    model.train()
    with torch.no_grad():
        assert torch.allclose(teacher(x), model.eval()(x), atol=1e-6)  # equal weights: equal logits, no mixing
    model.train()
    with torch.no_grad():
        for p in trainable.values():
            p.add_(0.5)
    before = {n: t.clone() for n, t in teacher.module.tracked().items()}
    d = teacher.update(model)
    for n, t in teacher.module.tracked().items():
        assert torch.allclose(t, d * before[n] + (1 - d) * trainable[n])
    teacher(x)
    assert model.training  # the student's mode comes back


def test_full_fine_tuning_keeps_a_full_copy() -> None:
    from training.distil import EmaTeacher

    teacher = EmaTeacher(create_model("vit_tiny_patch16_224", backbone_kwargs={"img_size": 32, "depth": 1}))
    assert not teacher.shared and hasattr(teacher.module, "backbone")


# -- the whole path ----------------------------------------------------------------------------------
def test_lora_run_merges_into_a_model_dir_that_process_py_loads_without_peft(tmp_path: Path) -> None:
    """Train 1 epoch with LoRA and Mix on tokens, merge, write model/; process.py (peft blocked, hub
    offline) matches the training-time network (the unmerged adapters from the checkpoint) to 1e-5."""
    from amf.model_dir import read_card
    from amf.predict import predict_proba
    from training.lora import attach_lora
    from training.train import main

    manifest = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    args = _train_args(manifest, out, "optim.epochs=1", "data.input_size=48", "data.center_crop=0", *TINY_VIT,
                       "model.lora.rank=8", "mix.stages=[blocks.1,blocks.2]")
    assert main(args) == 0
    card = read_card(out / "model")
    arch = card["architecture"]
    assert arch["backbone"] == "vit_tiny_patch16_224"
    assert arch["backbone_kwargs"] == {"img_size": 64, "depth": 4, "reg_tokens": 2}
    assert card["input_size"] == 48 and card["resize_to"] == 64 and card["format_version"] == 2
    lora = card["provenance"]["lora"]
    assert lora["rank"] == 8 and lora["merged"] and lora["adapted_modules"] == 16
    assert lora["merge_max_logit_change"] < 1e-4  # float rounding only
    assert card["provenance"]["recipe"]["mix"] == ["blocks.1", "blocks.2"]
    assert 0 < card["provenance"]["trainable_parameters"] < lora["total_parameters"]
    assert "teacher" in card["metrics"]
    log = (out / "train.log").read_text()
    assert "resized to 64" in log and "LoRA r=8" in log

    # the training-time network: the checkpoint's student, adapters unmerged
    cfg = load_config(None, args)
    spec = resolve_backbone(cfg.model.backbone, cfg.model.backbone_kwargs)
    student = create_model(spec.architecture, attention=cfg.model.attention, drop_rate=cfg.model.drop_rate,
                           backbone_kwargs=spec.kwargs)
    attach_lora(student, cfg.model.lora)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["algorithm"]["student"]
    student.load_state_dict(state)
    assert any(k.endswith("lora_B.default.weight") and v.abs().max() > 0 for k, v in state.items())  # it trained
    pages = synthetic_pages(5, 64)  # 64-px pages, centre-cropped to 48, resized to 64 on the device
    from amf.preprocess import prepare_pages

    expected = predict_proba(student, prepare_pages(pages, 48), **model_input(spec, student.backbone, 48).kwargs(),
                             tta=card["tta"])

    write_job(tmp_path / "in", pages)
    blocked = ("import runpy, sys; sys.modules['peft'] = None; sys.modules['transformers'] = None; "
               "sys.argv = ['process.py'] + sys.argv[1:]; "
               f"runpy.run_path({str(REPO / 'process.py')!r}, run_name='__main__')")
    env = {**os.environ, "AMF_BAKED_MODEL": "/nonexistent", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", blocked, "--input", str(tmp_path / "in"), "--output",
                             str(tmp_path / "out"), "--model", str(out / "model"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    entries = json.loads((tmp_path / "out" / "multiple-mitotic-figure-classification.json").read_text())
    got = np.array([e["confidence"] for e in entries])
    assert np.allclose(got, expected, atol=1e-5, rtol=0), np.abs(got - expected).max()

    # the same command again resumes from the checkpoint (adapters, shared teacher, optimizer) and,
    # with nothing left to train, merges the same adapters into the same weights
    assert main(args) == 0
    assert "resumed" in (out / "train.log").read_text()
    assert read_card(out / "model")["weights"]["sha256"] == card["weights"]["sha256"]
