"""LoRA (Hu et al., ICLR 2022) through peft: low-rank adapters on a frozen ViT backbone.

:func:`attach_lora` freezes ``model.backbone`` and injects adapters into it in place (peft's
``LoraModel``), so every module keeps its path: style mixers still hook ``blocks.N``, and the
refinement and the head (outside the backbone) train in full. :func:`merge_lora` folds the
adapters into the weights (``merge_and_unload``) at the end of training, which leaves a plain timm
network whose state dict a fresh ``amf.network.create_model`` loads strictly: inference needs
neither peft nor the hub.

peft is a training requirement only (requirements-train.txt) and is imported when LoRA is on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amf.network import AtypicalClassifier, is_token_backbone
from training.config import LoraConfig

log = logging.getLogger(__name__)
ADAPTER = "default"


@dataclass
class LoraAdapters:
    """The peft tuner over ``model.backbone`` and what the adapters amount to."""

    tuner: Any  # peft.LoraModel; not a submodule of the network, so the network's state is its own
    config: LoraConfig
    adapted_modules: list[str]
    counts: dict[str, int]  # trainable and total parameters while the adapters are attached

    def report(self) -> dict[str, Any]:
        """What model.json's provenance records of the fine-tune."""
        import peft

        return {"rank": self.config.rank, "alpha": self.config.alpha, "dropout": self.config.dropout,
                "target_modules": list(self.config.target_modules), "adapted_modules": len(self.adapted_modules),
                "peft": peft.__version__, **self.counts}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters (each tensor once, however often it is shared)."""
    params = {id(p): p for p in model.parameters()}.values()
    return {"trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad)),
            "total_parameters": int(sum(p.numel() for p in params))}


def attach_lora(model: AtypicalClassifier, cfg: LoraConfig) -> LoraAdapters:
    """Freeze the backbone and put rank-``cfg.rank`` adapters on its ``cfg.target_modules``."""
    if not is_token_backbone(model.backbone):
        raise ValueError(f"model.lora is for ViT backbones (timm's, with tokens); {type(model.backbone).__name__} "
                         "is not one: set model.lora.rank=0 to fine-tune it in full")
    try:
        import peft
    except ImportError as err:
        raise RuntimeError("model.lora needs peft: pip install -r requirements-train.txt") from err
    model.backbone.requires_grad_(False)
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                             target_modules=list(cfg.target_modules), bias="none")
    try:
        tuner = peft.LoraModel(model.backbone, config, ADAPTER)
    except ValueError as err:  # peft: no target module found
        raise ValueError(f"model.lora.target_modules {list(cfg.target_modules)} adapt nothing in "
                         f"{type(model.backbone).__name__}: {str(err).splitlines()[0]}") from err
    adapted = [name for name, m in model.backbone.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    counts = parameter_counts(model)
    adapters = LoraAdapters(tuner=tuner, config=cfg, adapted_modules=adapted, counts=counts)
    log.info("LoRA r=%d alpha=%g on %d modules (%s): %d of %d parameters train (%.2f%%)", cfg.rank, cfg.alpha,
             len(adapted), ", ".join(cfg.target_modules), counts["trainable_parameters"], counts["total_parameters"],
             100.0 * counts["trainable_parameters"] / max(1, counts["total_parameters"]))
    return adapters


@torch.no_grad()
def merge_lora(model: AtypicalClassifier, adapters: LoraAdapters, probe: torch.Tensor) -> float:
    """Fold the adapters into the backbone's weights in place; returns the largest change of the
    logits on ``probe`` (a float N×3×H×W batch) that the merge made, which float rounding alone explains."""
    was_training = model.training
    model.eval()
    try:
        before = model(probe).float()
        merged = adapters.tuner.merge_and_unload()
        if merged is not model.backbone:  # peft replaces the adapted modules in place and returns the same module
            raise RuntimeError("peft merge_and_unload returned a new backbone; expected an in-place merge")
        after = model(probe).float()
    finally:
        model.train(was_training)
    return float((after - before).abs().max())
