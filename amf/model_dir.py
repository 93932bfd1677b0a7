"""The model directory, the contract between training and inference.

A model directory holds ``model.safetensors`` (weights only, no pickle) and ``model.json``,
which describes everything needed to rebuild and use the network: architecture, input size,
normalisation, class order, decision threshold, TTA views, provenance and validation metrics.
Nothing outside this module reads the weights directly.

Format 1: one network, fp32 weights. Format 2 adds what a format-1 reader would silently get
wrong, so such a reader refuses it: ``members`` (K networks of one architecture in the one
safetensors file, keys prefixed ``member.<k>.``, stored in fp16 and upcast to fp32 on load; the
members' calibrated probabilities are averaged), ``calibration`` (a temperature or Platt's scale
and bias, applied to each member's logits), ``center_crop`` (> 0) and ``resize_to`` (a ViT's
native input side: the input_size patch is resized to it on the device). A directory is written in
the lowest format that holds it, so a plain single network stays format 1. Format 3 adds
``stain_norm`` (Reinhard's LAB target, :mod:`amf.stain`), which a format-2 reader would ignore.
``architecture.backbone_kwargs`` (the timm keyword arguments of a ViT) needs no new format: a
reader without it fails the strict load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from amf import CLASS_NAMES
from amf.atomic import write_atomic, write_json_atomic
from amf.card import (  # noqa: F401  (read_card, format_needed, TTA_VIEWS: this module's public names too)
    CARD_NAME,
    FORMAT_VERSION,
    POSITIVE_CLASS,
    PREPROCESSING,
    REQUIRED_KEYS,
    TTA_VIEWS,
    WEIGHTS_NAME,
    ModelCard,
    check_extensions,
    file_sha256,
    format_needed,
    is_model_dir,
    read_card,
    verify_weights,
)
from amf.errors import ModelDirError
from amf.network import AtypicalClassifier, MemberEnsemble, create_model
from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD
from amf.stain import StainTarget

MEMBER_PREFIX = "member.{}."


@dataclass
class LoadedModel(ModelCard):
    model: AtypicalClassifier | MemberEnsemble  # an ensemble returns K×N×classes logits
    card: dict[str, Any]


def architecture_of(model: AtypicalClassifier, backbone: str, drop_rate: float,
                    backbone_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``backbone`` is a timm architecture (never an hf-hub: name) and ``backbone_kwargs`` its JSON
    keyword arguments, recorded only where there are any."""
    return {
        "backbone": backbone,
        **({"backbone_kwargs": dict(backbone_kwargs)} if backbone_kwargs else {}),
        "attention": model.attention_kind,
        "num_classes": model.classifier.out_features,
        "num_features": model.num_features,
        "drop_rate": drop_rate,
    }


def make_card(model: AtypicalClassifier, *, backbone: str, drop_rate: float, input_size: int, threshold: float,
              threshold_source: str, tta: str, provenance: dict[str, Any] | None = None,
              metrics: dict[str, Any] | None = None, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD, center_crop: int = 0,
              backbone_kwargs: dict[str, Any] | None = None, resize_to: int | None = None,
              stain: StainTarget | None = None) -> dict[str, Any]:
    """Every key of ``model.json`` but those :func:`save_model_dir` adds (version, parameters, weights).

    ``resize_to``: the network's input side where the input_size patch is resized on the device (a ViT's
    native size); recorded only then, so a card without it means no resize."""
    return {
        "architecture": architecture_of(model, backbone, drop_rate, backbone_kwargs),
        "input_size": int(input_size),
        "center_crop": int(center_crop),
        **({"stain_norm": stain.to_card()} if stain else {}),
        **({"resize_to": int(resize_to)} if resize_to else {}),
        "mean": list(mean),
        "std": list(std),
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "tta": tta,
        "preprocessing": PREPROCESSING + (f"; then the central {center_crop} px resized (bilinear) back to input_size"
                                          if center_crop else "")
        + ("; then each patch's LAB mean and std (taken before the crop) mapped onto stain_norm's target (Reinhard)"
           if stain else "")
        + (f"; after normalisation, bilinear resize to {resize_to}×{resize_to} on the device" if resize_to else ""),
        "provenance": provenance or {},
        "metrics": metrics or {},
    }


def _detached(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(dtype).contiguous().cpu() if v.is_floating_point() else v.detach().contiguous().cpu()
            for k, v in state.items()}


def _refuse_hooks(model: AtypicalClassifier) -> None:
    # The shipped student carries nothing training-only: no hooks.
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        raise ModelDirError("refusing to save a network with forward hooks attached (training-only style mixers?)")


def _write(path: Path, state: dict[str, torch.Tensor], card: dict[str, Any], parameters: int) -> Path:
    version = max(int(card.get("format_version", 1)), format_needed(card))  # a test may ask for a newer one
    card = {"format_version": version, **{k: v for k, v in card.items() if k != "format_version"}}
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelDirError(f"model card lacks {', '.join(missing)}")
    if list(card["class_names"]) != list(CLASS_NAMES):
        raise ModelDirError(f"class order must be {list(CLASS_NAMES)}, got {card['class_names']}")
    if card["tta"] not in TTA_VIEWS:
        raise ModelDirError(f"tta must be one of {TTA_VIEWS}, got {card['tta']!r}")
    check_extensions(card, "model card")
    path.mkdir(parents=True, exist_ok=True)
    weights = write_atomic(path / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    card["parameters"] = parameters
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    card["weights"] = {"file": WEIGHTS_NAME, "sha256": file_sha256(weights), "dtype": ",".join(dtypes)}
    write_json_atomic(path / CARD_NAME, card, nan_as_null=True)  # an undefined metric is null
    return path


def save_model_dir(path: str | Path, model: AtypicalClassifier, card: dict[str, Any]) -> Path:
    """Write weights (fp32) and card. ``card`` must hold at least the keys in ``REQUIRED_KEYS`` but the version."""
    _refuse_hooks(model)
    state = _detached(model.state_dict(), torch.float32)
    return _write(Path(path), state, card, int(sum(v.numel() for v in state.values() if v.is_floating_point())))


def save_ensemble_dir(path: str | Path, members: list[AtypicalClassifier], card: dict[str, Any],
                      member_cards: list[dict[str, Any]], calibration: dict[str, Any] | None = None,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write K networks of one architecture as one format-2 directory.

    Their weights share ``model.safetensors`` under ``member.<k>.`` prefixes, in ``dtype`` (fp16
    halves the directory; the loader upcasts to fp32). ``member_cards`` describe the members (fold,
    metrics) in order; ``calibration`` (``{"kind": "temperature", "temperature": T, ...}`` or
    ``{"kind": "platt", "scale": a, "bias": b, ...}``) applies to each member's logits before the
    members' probabilities are averaged.
    """
    if not members or len(members) != len(member_cards):
        raise ModelDirError(f"{len(members)} networks but {len(member_cards)} member descriptions")
    keys = list(members[0].state_dict())
    state: dict[str, torch.Tensor] = {}
    for k, member in enumerate(members):
        _refuse_hooks(member)
        own = member.state_dict()
        if list(own) != keys or any(own[n].shape != members[0].state_dict()[n].shape for n in keys):
            raise ModelDirError(f"member {k} does not share the architecture of member 0")
        state.update({MEMBER_PREFIX.format(k) + n: v for n, v in _detached(own, dtype).items()})
    card = {**card, "members": list(member_cards)}
    if calibration is not None:
        card["calibration"] = calibration
    per_member = int(sum(v.numel() for v in members[0].state_dict().values() if v.is_floating_point()))
    return _write(Path(path), state, card, per_member * len(members))


def _member_ensemble(skeleton: AtypicalClassifier, state: dict[str, torch.Tensor], count: int) -> MemberEnsemble:
    """The members' fp16 (or fp32) tensors, upcast to fp32 as they are stacked; MemberEnsemble checks
    each member strictly against the architecture (names and shapes)."""
    states = []
    for k in range(count):
        prefix = MEMBER_PREFIX.format(k)
        states.append({n[len(prefix):]: v for n, v in state.items() if n.startswith(prefix)})
    if sum(len(s) for s in states) != len(state):
        raise ValueError(f"the file holds tensors of no listed member (the card lists {count})")
    return MemberEnsemble(skeleton, states)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network from ``model.json`` and load ``model.safetensors`` strictly."""
    path = Path(path)
    card = read_card(path)
    weights = verify_weights(path, card)
    arch = card["architecture"]
    model = create_model(
        arch["backbone"], attention=arch["attention"], num_classes=arch["num_classes"], drop_rate=arch["drop_rate"],
        backbone_kwargs=arch.get("backbone_kwargs"),
    )
    try:
        state = load_file(str(weights))
        if card.get("members"):
            model = _member_ensemble(model, state, len(card["members"]))
        else:
            model.load_state_dict(state, strict=True)
    except Exception as err:  # safetensors and torch raise several types for a bad file
        raise ModelDirError(f"weights in {weights} do not fit {arch['backbone']}: {str(err).splitlines()[0]}") from err
    model.eval().to(device)
    if not isinstance(model, MemberEnsemble):  # the ensemble lays out its stacked kernels itself
        model.to(memory_format=torch.channels_last)
    return LoadedModel(model=model, card=card)
