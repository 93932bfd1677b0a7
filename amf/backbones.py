"""The backbone registry: the timm architecture and keyword arguments each named backbone needs.

Pathology foundation models are published as Hugging Face hub names (``hf-hub:MahmoodLab/UNI2-h``)
whose architecture is a stock timm ViT built with extra keyword arguments (SwiGLU MLP, register
tokens, layer scale, dynamic image size) and, often, their own normalisation. Building from a hub
name fetches a config from the hub even with ``pretrained=False``, so nothing shipped may do it:
training resolves a name here to the underlying timm architecture and its kwargs, and
``model.json`` records those two, which :func:`amf.network.create_model` builds offline.

Every kwarg in the registry and in ``model.json`` is plain JSON; the few that timm wants as
classes (``mlp_layer``, ``act_layer``, ``norm_layer``) are named and become classes in
:func:`timm_kwargs`. Any timm name outside the registry is built as given, with the kwargs given,
and normalised with ImageNet statistics like the CNNs.

The licences below are the publishers' as read from their model cards when the entry was added;
check the card before you use or share anything trained from these weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD, ModelInput

HUB_PREFIX = "hf-hub:"
# Set by create_model itself, or by their own config section; a user kwarg may not change them.
RESERVED_KWARGS = ("pretrained", "num_classes", "global_pool", "drop_path_rate", "model_name")


@dataclass(frozen=True)
class BackboneEntry:
    architecture: str  # the timm name built offline (never an hf-hub: name)
    kwargs: dict[str, Any]  # JSON timm kwargs on top of the architecture's own
    input_size: int  # the native input side, what training resizes to
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: str | None = None  # hf-hub:owner/name for gated hub weights; None: timm's pretrained tag
    licence: str = ""
    note: str = ""


_SWIGLU = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}
_DINOV2 = "Apache-2.0 (Meta DINOv2), ungated"
_DINOV3 = "DINOv3 License (Meta), gated: accept the terms on the hub"

REGISTRY: dict[str, BackboneEntry] = {
    # UNI2-h model card: timm.create_model(pretrained=True, **timm_kwargs) with these kwargs.
    "hf-hub:MahmoodLab/UNI2-h": BackboneEntry(
        "vit_giant_patch14_224",
        {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
         "mlp_ratio": 2.66667 * 2, "no_embed_class": True, **_SWIGLU, "reg_tokens": 8, "dynamic_img_size": True},
        224, weights="hf-hub:MahmoodLab/UNI2-h",
        licence="CC-BY-NC-ND-4.0, gated: non-commercial research only, no redistribution of the weights",
    ),
    "hf-hub:MahmoodLab/UNI": BackboneEntry(
        "vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        224, weights="hf-hub:MahmoodLab/UNI",
        licence="CC-BY-NC-ND-4.0, gated: non-commercial research only, no redistribution of the weights",
    ),
    # Virchow2 model card: hf-hub:paige-ai/Virchow2 with mlp_layer=SwiGLUPacked, act_layer=SiLU;
    # its config: vit_huge_patch14_224, 4 register tokens, mlp_ratio 5.3375, layer scale 1e-5.
    "hf-hub:paige-ai/Virchow2": BackboneEntry(
        "vit_huge_patch14_224",
        {"img_size": 224, "init_values": 1e-5, "reg_tokens": 4, "mlp_ratio": 5.3375, **_SWIGLU,
         "dynamic_img_size": True},
        224, weights="hf-hub:paige-ai/Virchow2",
        licence="CC-BY-NC-ND-4.0, gated: non-commercial research only, no redistribution of the weights",
    ),
    "hf-hub:paige-ai/Virchow": BackboneEntry(
        "vit_huge_patch14_224",
        {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, **_SWIGLU, "dynamic_img_size": True},
        224, weights="hf-hub:paige-ai/Virchow",
        licence="gated; see the model card for the terms (research use)",
    ),
    # H-optimus-0 model card: hf-hub:bioptimus/H-optimus-0 with init_values=1e-5, dynamic_img_size=False;
    # its config: vit_giant_patch14_reg4_dinov2 at 224 px, with its own normalisation.
    "hf-hub:bioptimus/H-optimus-0": BackboneEntry(
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        224, mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517),
        weights="hf-hub:bioptimus/H-optimus-0", licence="Apache-2.0 (check the model card's terms of access)",
    ),
    # timm's own DINOv2 weights (native 518 px); at 224 px timm resamples the position embedding on load.
    **{f"vit_{size}_patch14_{reg}dinov2.lvd142m": BackboneEntry(
        f"vit_{size}_patch14_{reg}dinov2.lvd142m", {"img_size": 224}, 224, licence=_DINOV2)
       for size in ("small", "base", "large", "giant") for reg in ("", "reg4_")},
    # timm's DINOv3 (rotary position embedding, any input size; native 256 px).
    **{f"vit_{size}_patch16_dinov3.lvd1689m": BackboneEntry(
        f"vit_{size}_patch16_dinov3.lvd1689m", {}, 256, licence=_DINOV3)
       for size in ("small", "small_plus", "base", "large", "huge_plus")},
}

ALIASES = {
    "uni2-h": "hf-hub:MahmoodLab/UNI2-h",
    "uni": "hf-hub:MahmoodLab/UNI",
    "virchow2": "hf-hub:paige-ai/Virchow2",
    "virchow": "hf-hub:paige-ai/Virchow",
    "h-optimus-0": "hf-hub:bioptimus/H-optimus-0",
}


@dataclass(frozen=True)
class BackboneSpec:
    """A resolved backbone: what to build (offline), how to feed it, where its weights live."""

    name: str  # as given
    architecture: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int | None = None  # None: not a registry entry (CNNs take any size)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    weights: str | None = None
    licence: str = ""

    @property
    def registered(self) -> bool:
        return self.input_size is not None


def resolve_backbone(name: str, kwargs: dict[str, Any] | None = None) -> BackboneSpec:
    """The registry entry for ``name`` (or an alias) with ``kwargs`` on top; any other timm name as given."""
    kwargs = dict(kwargs or {})
    reserved = sorted(set(kwargs) & set(RESERVED_KWARGS))
    if reserved:
        raise ValueError(f"backbone kwargs may not set {', '.join(reserved)}: the network sets them "
                         "(drop_path_rate is model.drop_path_rate)")
    key = ALIASES.get(name.lower(), name)
    entry = REGISTRY.get(key)
    if entry is None:
        if name.startswith(HUB_PREFIX):
            raise ValueError(f"{name} is not in the backbone registry (amf/backbones.py: "
                             f"{', '.join(n for n in REGISTRY if n.startswith(HUB_PREFIX))}); building it would fetch "
                             "its config from the hub. Add an entry with its timm architecture and kwargs")
        return BackboneSpec(name=name, architecture=name, kwargs=kwargs)
    return BackboneSpec(name=name, architecture=entry.architecture, kwargs={**entry.kwargs, **kwargs},
                        input_size=int(kwargs.get("img_size", entry.input_size)), mean=entry.mean, std=entry.std,
                        weights=entry.weights, licence=entry.licence)


def _mlp_layers() -> dict[str, type]:
    from timm.layers import GluMlp, Mlp, SwiGLU, SwiGLUPacked

    return {"swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU, "glu": GluMlp, "mlp": Mlp}


def timm_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """JSON kwargs as timm takes them: named layers become classes; everything else passes through."""
    from timm.layers import get_act_layer, get_norm_layer

    out = dict(kwargs or {})
    if isinstance(out.get("mlp_layer"), str):
        layers = _mlp_layers()
        if out["mlp_layer"] not in layers:
            raise ValueError(f"unknown mlp_layer {out['mlp_layer']!r}; known: {', '.join(layers)}")
        out["mlp_layer"] = layers[out["mlp_layer"]]
    if isinstance(out.get("act_layer"), str):
        out["act_layer"] = get_act_layer(out["act_layer"])
    if isinstance(out.get("norm_layer"), str):
        out["norm_layer"] = get_norm_layer(out["norm_layer"])
    return out


def native_input_size(backbone: Any) -> int | None:
    """A ViT's native input side (its position embedding's grid times the patch size); None for a CNN."""
    embed = getattr(backbone, "patch_embed", None)
    if not isinstance(getattr(backbone, "num_prefix_tokens", None), int) or embed is None:
        return None
    size = getattr(embed, "img_size", None)
    return int(size[0]) if size else None


def model_input(spec: BackboneSpec, backbone: Any, patch_size: int, resize: int = -1) -> ModelInput:
    """The normalisation and input side for ``backbone`` fed patch_size×patch_size patches.

    ``resize``: -1 the native size of a ViT (none for a CNN), 0 none, N an N×N input. A resize to
    the patch size itself is no resize, so the card of such a model carries none.
    """
    side = {-1: native_input_size(backbone), 0: None}.get(resize, resize)
    return ModelInput(mean=tuple(spec.mean), std=tuple(spec.std),
                      resize_to=int(side) if side and side != patch_size else None)
