"""The network: a timm backbone, a light attention refinement, a pooled embedding and a head.

``create_model`` is the one public factory. The model exposes timm's two seams:

* ``forward_features(x)``: the backbone feature map. Training-only perturbations (style
  mixing) attach from ``training/`` as forward hooks on named backbone stages; the network
  itself knows nothing of them.
* ``forward_head(features, pre_logits=False)``: attention refinement and pooling to the
  embedding (``pre_logits=True``, where the alignment losses act), then the classifier.

A ViT backbone (timm's, with ``num_prefix_tokens``) gives tokens, B×N×C: ``forward_features``
turns its patch tokens into the B×C×h×w map the refinement acts on (:func:`_tokens_to_map`),
so everything after it is the same for CNNs and ViTs.

:class:`MemberEnsemble` holds K trained networks of one architecture as stacked weights and
returns all K members' logits from one call.
"""

from __future__ import annotations

import copy
import logging
import types

import timm
import torch
from torch import nn
from torch.func import functional_call, vmap

from amf import CLASS_NAMES
from amf.backbones import HUB_PREFIX, timm_kwargs
from amf.card import ATTENTION_KINDS
from amf.errors import ModelDirError


class ChannelSpatialAttention(nn.Module):
    """CBAM (Woo et al., 2018): channel then spatial gating, followed by average pooling."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def refine(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.channel_mlp(x.mean((2, 3), keepdim=True)) + self.channel_mlp(x.amax((2, 3), keepdim=True))
        x = x * torch.sigmoid(gate)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(x).mean((2, 3))


class AttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al., 2018) over the positions of the feature map."""

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.value = nn.Conv2d(channels, hidden, 1)
        self.gate = nn.Conv2d(channels, hidden, 1)
        self.score = nn.Conv2d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.score(torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x)))  # B×1×H×W
        weights = torch.softmax(logits.flatten(2), dim=-1)  # B×1×HW
        return torch.bmm(weights, x.flatten(2).transpose(1, 2)).squeeze(1)


class AveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def _build_refinement(kind: str, channels: int) -> nn.Module:
    if kind == "cbam":
        return ChannelSpatialAttention(channels)
    if kind == "attnpool":
        return AttentionPool(channels)
    if kind == "none":
        return AveragePool()
    raise ValueError(f"unknown attention refinement {kind!r}; choose one of {ATTENTION_KINDS}")


def is_token_backbone(backbone: nn.Module) -> bool:
    """A timm ViT (VisionTransformer, Eva, ...): its features are tokens, the first ``num_prefix_tokens``
    of them class and register tokens."""
    return isinstance(getattr(backbone, "num_prefix_tokens", None), int) and hasattr(backbone, "patch_embed")


def _tokens_to_map(backbone: nn.Module, tokens: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """B×N×C ViT tokens as the B×C×h×w map of the patch tokens; class and register tokens dropped.

    The result is a channels_last view of the tokens (no copy): token order is row-major over the grid.
    """
    embed = backbone.patch_embed
    if getattr(backbone, "dynamic_img_size", False) and hasattr(embed, "dynamic_feat_size"):
        h, w = embed.dynamic_feat_size(tuple(image_size))
    else:
        h, w = embed.grid_size
    patches = tokens[:, backbone.num_prefix_tokens :]
    if patches.shape[1] != h * w:
        raise ValueError(f"{patches.shape[1]} patch tokens do not make the {h}×{w} grid of a "
                         f"{image_size[0]}×{image_size[1]} input")
    return patches.reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


class AtypicalClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, attention: str, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.token_backbone = is_token_backbone(backbone)
        self.num_features: int = backbone.num_features
        self.attention_kind = attention
        self.refine = _build_refinement(attention, self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)

    # -- timm seams ---------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(x)
        if self.token_backbone:
            return _tokens_to_map(self.backbone, features, x.shape[-2:])
        return features

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        embedding = self.refine(x)
        return embedding if pre_logits else self.classify_embedding(embedding)

    def classify_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_drop(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_model(
    backbone: str = "tf_efficientnet_lite0",
    *,
    attention: str = "cbam",
    num_classes: int = len(CLASS_NAMES),
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
    backbone_kwargs: dict | None = None,
) -> AtypicalClassifier:
    """Build the classifier with random weights; ``training/pretrained.py`` loads pretrained ones.

    ``backbone`` is a timm architecture and ``backbone_kwargs`` its JSON keyword arguments, built
    exactly as given and offline (``amf.backbones.resolve_backbone`` turns a registry name into the two).
    """
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention refinement {attention!r}; choose one of {ATTENTION_KINDS}")
    if backbone.startswith(HUB_PREFIX):
        raise ModelDirError(f"cannot build {backbone!r} offline: resolve it to its timm architecture with "
                            "amf.backbones.resolve_backbone")
    try:
        body = timm.create_model(
            backbone, pretrained=False, num_classes=0, global_pool="", drop_path_rate=drop_path_rate,
            **timm_kwargs(backbone_kwargs)
        )
    except (RuntimeError, TypeError) as err:  # timm's unknown-model error; a kwarg the architecture lacks
        given = f" with {backbone_kwargs}" if backbone_kwargs else ""
        raise ModelDirError(f"cannot build backbone {backbone!r}{given}: {err}") from err
    return AtypicalClassifier(body, attention, num_classes, drop_rate)


ENSEMBLE_ENGINES = ("auto", "vmap", "loop")
log = logging.getLogger(__name__)


def _multiply_add_batchnorm(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode batch norm as one multiply-add, then timm's BatchNormAct2d tail (dropout, activation)."""
    scale = torch.rsqrt(self.running_var + self.eps)
    if self.weight is not None:
        scale = scale * self.weight
    shift = -self.running_mean * scale
    if self.bias is not None:
        shift = shift + self.bias
    x = x * scale[:, None, None] + shift[:, None, None]
    for name in ("drop", "act"):
        if hasattr(self, name):
            x = getattr(self, name)(x)
    return x


def _vmap_skeleton(skeleton: nn.Module) -> nn.Module:
    """A copy of the (storage-less) skeleton whose BatchNorm layers are plain multiply-adds. Inside vmap on
    CUDA, F.batch_norm asks its input whether it is channels_last (to choose cuDNN), which a batched tensor
    cannot answer: "NYI: querying is_contiguous inside of vmap" (torch 2.11 on an H200, see
    benchmarks/results/gpu-h200/). The multiply-add asks nothing and gives the same numbers."""
    net = copy.deepcopy(skeleton)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.forward = types.MethodType(_multiply_add_batchnorm, module)  # type: ignore[method-assign]
    return net


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """K tensors of one shape as one K×... tensor, floating point ones as fp32 (fp16 storage upcast
    in the same copy); each 4-D member slice (a conv kernel) is laid out channels_last."""
    first = tensors[0]
    if not first.is_floating_point():
        return torch.stack(tensors)
    if first.dim() == 4:
        o, i, h, w = first.shape
        out = torch.empty(len(tensors), o, h, w, i, dtype=torch.float32).permute(0, 1, 4, 2, 3)
    else:
        out = torch.empty(len(tensors), *first.shape, dtype=torch.float32)
    for k, t in enumerate(tensors):
        out[k].copy_(t)
    return out


class MemberEnsemble(nn.Module):
    """K networks of one architecture: ``forward(x)`` gives the K×N×classes logits of every member.

    The members' weights are stacked along a leading K axis (``torch.func.stack_module_state``'s
    layout). Two engines give the same numbers (to float rounding):

    * ``vmap``: one batched computation, ``torch.func.vmap`` over ``functional_call`` (BatchNorm in
      eval mode); the convolutions become grouped convolutions over the K members.
    * ``loop``: the same stacked tensors, one member at a time.

    ``auto`` (the default) takes ``vmap`` on CUDA and ``loop`` on the CPU, where the batched form
    (oneDNN grouped convolutions) measured 1.5–3× slower than K plain forwards on a shared 2-core
    machine (benchmarks/ensemble_forward.py).
    Inference only: the members always run in eval mode.
    """

    def __init__(self, skeleton: AtypicalClassifier, states: list[dict[str, torch.Tensor]],
                 engine: str = "auto") -> None:
        super().__init__()
        if not states:
            raise ValueError("an ensemble needs at least one member")
        if engine not in ENSEMBLE_ENGINES:
            raise ValueError(f"unknown ensemble engine {engine!r}; choose one of {ENSEMBLE_ENGINES}")
        expected = {name: t.shape for name, t in skeleton.state_dict().items()}
        names = list(expected)
        for k, state in enumerate(states):
            missing = sorted(set(names) - set(state))
            unexpected = sorted(set(state) - set(names))
            misshapen = sorted(n for n in set(state) & set(names) if state[n].shape != expected[n])
            if missing or unexpected or misshapen:
                raise ValueError(f"member {k} does not fit {type(skeleton).__name__}: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}, wrong shape {misshapen[:3]}")
        self.names = names
        self.num_members = len(states)
        self.engine = engine
        self.attention_kind = skeleton.attention_kind
        self.num_features = skeleton.num_features
        for i, name in enumerate(names):
            stacked = _stack([state[name] for state in states])
            if stacked.is_floating_point():
                self.register_parameter(f"stacked_{i}", nn.Parameter(stacked, requires_grad=False))
            else:
                self.register_buffer(f"stacked_{i}", stacked)
        # The architecture without storage (its tensors copied as meta tensors, not their data); kept
        # out of the module tree so .to() and .parameters() skip it.
        memo: dict[int, torch.Tensor] = {
            id(t): nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=False)
            if isinstance(t, nn.Parameter) else torch.empty_like(t, device="meta")
            for t in [*skeleton.parameters(), *skeleton.buffers()]}
        object.__setattr__(self, "skeleton", copy.deepcopy(skeleton, memo).eval())
        object.__setattr__(self, "vmap_skeleton", _vmap_skeleton(self.skeleton))

    def member_state(self, k: int | None = None) -> dict[str, torch.Tensor]:
        """Every member's tensors stacked (``k`` None), or views of member ``k``'s."""
        tensors = [getattr(self, f"stacked_{i}") for i in range(len(self.names))]
        return dict(zip(self.names, tensors if k is None else [t[k] for t in tensors], strict=True))

    def member(self, k: int) -> AtypicalClassifier:
        """Member ``k`` as a plain network with its own copy of the weights (for exporters that
        cannot trace ``functional_call``, such as the ONNX one), in eval mode."""
        net = copy.deepcopy(self.skeleton)
        state = {n: t.detach().clone().contiguous() for n, t in self.member_state(k).items()}
        net.load_state_dict(state, strict=True, assign=True)
        return net.to(next(self.parameters()).device).eval()

    def batched(self, device: torch.device) -> bool:
        return self.engine == "vmap" or (self.engine == "auto" and device.type == "cuda")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batched(x.device):
            skeleton = self.vmap_skeleton
            try:
                return vmap(lambda state, images: functional_call(skeleton, state, (images,)),
                            in_dims=(0, None))(self.member_state(), x)
            except RuntimeError as err:
                if self.engine != "auto" or "vmap" not in str(err):
                    raise
                # A torch build whose batching rules miss an op of this network: the same numbers, member by
                # member, rather than a failed job.
                log.warning("batched ensemble forward failed (%s); running the %d members one by one from now on",
                            str(err).splitlines()[0], self.num_members)
                self.engine = "loop"
        return torch.stack([functional_call(self.skeleton, self.member_state(k), (x,))
                            for k in range(self.num_members)])
