"""The network: a timm backbone, a light attention refinement, a pooled embedding and a head.

``create_model`` is the one public factory. The model exposes timm's two seams:

* ``forward_features(x)``: the backbone feature map. Training-only perturbations (style
  mixing) attach from ``training/`` as forward hooks on named backbone stages; the network
  itself knows nothing of them.
* ``forward_head(features, pre_logits=False)``: attention refinement and pooling to the
  embedding (``pre_logits=True``, where the alignment losses act), then the classifier.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from amf import CLASS_NAMES
from amf.errors import ModelDirError

ATTENTION_KINDS = ("cbam", "attnpool", "none")


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

    # -- timm seams ---------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

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
) -> AtypicalClassifier:
    """Build the classifier with random weights; ``training/pretrained.py`` loads ImageNet ones."""
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention refinement {attention!r}; choose one of {ATTENTION_KINDS}")
    try:
        body = timm.create_model(
            backbone, pretrained=False, num_classes=0, global_pool="", drop_path_rate=drop_path_rate
        )
    except RuntimeError as err:  # timm's unknown-model error
        raise ModelDirError(f"cannot build backbone {backbone!r}: {err}") from err
    return AtypicalClassifier(body, attention, num_classes, drop_rate)
