"""The network: a timm backbone, a light attention refinement, a pooled embedding and a head.

``create_model`` is the one public factory. The model exposes timm's two seams:

* ``forward_features(x, domains=None)``: the backbone feature map. Training may attach
  style mixers (``attach_style_mixers``) that run after named backbone stages; with none
  attached this is exactly ``backbone.forward_features``.
* ``forward_head(features, pre_logits=False)``: attention refinement and pooling to the
  embedding (``pre_logits=True``, where the alignment losses act), then the classifier.
"""

from __future__ import annotations

from collections.abc import Iterator

import timm
import torch
from torch import nn

from amf import CLASS_NAMES
from amf.errors import ModelDirError

ATTENTION_KINDS = ("cbam", "attnpool", "none")
_STAGE_CONTAINERS = {"blocks", "stages"}  # timm's names for a Sequential of stages
_NOT_FEATURE_STAGES = {"global_pool", "fc", "classifier", "head", "head_drop", "fc_norm", "pre_logits"}


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


class AtypicalClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, attention: str, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features: int = backbone.num_features
        self.attention_kind = attention
        self.refine = _build_refinement(attention, self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)
        # Empty in every shipped model: training fills it, and it holds no parameters.
        self.style_mixers = nn.ModuleDict()

    # -- stages -------------------------------------------------------------------------------
    def _stages(self) -> Iterator[tuple[str, nn.Module]]:
        """The backbone's feature path as an ordered list of stages (``blocks.1``, ``layer2``...)."""
        for name, child in self.backbone.named_children():
            if name in _NOT_FEATURE_STAGES:
                continue
            if name in _STAGE_CONTAINERS and isinstance(child, nn.Sequential):
                for sub_name, sub in child.named_children():
                    yield f"{name}.{sub_name}", sub
            else:
                yield name, child

    def stage_names(self) -> list[str]:
        return [name for name, _ in self._stages()]

    def attach_style_mixers(self, mixers: dict[str, nn.Module]) -> None:
        """Run ``mixers[stage]`` after each named stage. Checks the staged path is faithful."""
        known = self.stage_names()
        for stage in mixers:
            if stage not in known:
                raise ValueError(f"no backbone stage {stage!r}; stages are: {', '.join(known)}")
        self.style_mixers = nn.ModuleDict({k.replace(".", "/"): v for k, v in mixers.items()})
        self._check_staged_path()

    def detach_style_mixers(self) -> None:
        self.style_mixers = nn.ModuleDict()

    @torch.no_grad()
    def _check_staged_path(self) -> None:
        was_training = self.training
        self.eval()
        x = torch.randn(2, 3, 128, 128, device=next(self.parameters()).device)
        try:
            staged = self._staged_features(x, None, mix=False)
            ref = self.backbone.forward_features(x)
            same = staged.shape == ref.shape and torch.allclose(staged, ref, atol=1e-4)
        except (RuntimeError, TypeError, AssertionError):
            same = False
        self.train(was_training)
        if not same:
            raise ValueError(
                f"{type(self.backbone).__name__} is not a plain sequence of stages, so style mixing "
                "cannot be placed between them; switch mixing off for this backbone"
            )

    def _staged_features(self, x: torch.Tensor, domains: torch.Tensor | None, mix: bool = True) -> torch.Tensor:
        for name, stage in self._stages():
            x = stage(x)
            key = name.replace(".", "/")  # ModuleDict keys may not hold dots
            if mix and key in self.style_mixers:
                x = self.style_mixers[key](x, domains)
        return x

    # -- timm seams ---------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, domains: torch.Tensor | None = None) -> torch.Tensor:
        if len(self.style_mixers) == 0:
            return self.backbone.forward_features(x)
        return self._staged_features(x, domains)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        embedding = self.refine(x)
        return embedding if pre_logits else self.classify_embedding(embedding)

    def classify_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_drop(embedding))

    def forward(self, x: torch.Tensor, domains: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, domains))


def create_model(
    backbone: str = "tf_efficientnet_lite0",
    *,
    attention: str = "cbam",
    num_classes: int = len(CLASS_NAMES),
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.0,
    pretrained: bool = False,
) -> AtypicalClassifier:
    """Build the classifier. ``pretrained=True`` asks timm for its own weights (needs a hub)."""
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention refinement {attention!r}; choose one of {ATTENTION_KINDS}")
    try:
        body = timm.create_model(
            backbone, pretrained=pretrained, num_classes=0, global_pool="", drop_path_rate=drop_path_rate
        )
    except RuntimeError as err:  # timm's unknown-model error
        raise ModelDirError(f"cannot build backbone {backbone!r}: {err}") from err
    return AtypicalClassifier(body, attention, num_classes, drop_rate)
