"""The model directory, the contract between training and inference.

A model directory holds ``model.safetensors`` (weights only, no pickle) and ``model.json``,
which describes everything needed to rebuild and use the network: architecture, input size,
normalisation, class order, decision threshold, TTA views, provenance and validation metrics.
Nothing outside this module reads the weights directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from amf import CLASS_NAMES
from amf.atomic import write_atomic, write_json_atomic
from amf.errors import ModelDirError
from amf.network import AtypicalClassifier, create_model
from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD

FORMAT_VERSION = 1
CARD_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
TTA_VIEWS = ("none", "flip2", "dihedral4", "dihedral8")
POSITIVE_CLASS = CLASS_NAMES[1]
PREPROCESSING = "RGB uint8; centre crop or reflect pad to input_size, no resampling; ImageNet normalisation"
_REQUIRED = ("format_version", "architecture", "input_size", "mean", "std", "class_names", "threshold", "tta")


@dataclass
class LoadedModel:
    model: AtypicalClassifier
    card: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    @property
    def positive_index(self) -> int:
        """The head's output index of P(atypical), from the card's class order."""
        return list(self.card["class_names"]).index(self.card.get("positive_class", POSITIVE_CLASS))

    @property
    def input_size(self) -> int:
        return int(self.card["input_size"])


def is_model_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CARD_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def architecture_of(model: AtypicalClassifier, backbone: str, drop_rate: float) -> dict[str, Any]:
    return {
        "backbone": backbone,
        "attention": model.attention_kind,
        "num_classes": model.classifier.out_features,
        "num_features": model.num_features,
        "drop_rate": drop_rate,
    }


def make_card(model: AtypicalClassifier, *, backbone: str, drop_rate: float, input_size: int, threshold: float,
              threshold_source: str, tta: str, provenance: dict[str, Any] | None = None,
              metrics: dict[str, Any] | None = None, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> dict[str, Any]:
    """Every key of ``model.json`` but those :func:`save_model_dir` adds (version, parameters, weights)."""
    return {
        "architecture": architecture_of(model, backbone, drop_rate),
        "input_size": int(input_size),
        "mean": list(mean),
        "std": list(std),
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "tta": tta,
        "preprocessing": PREPROCESSING,
        "provenance": provenance or {},
        "metrics": metrics or {},
    }


def save_model_dir(path: str | Path, model: AtypicalClassifier, card: dict[str, Any]) -> Path:
    """Write weights and card. ``card`` must hold at least the keys in ``_REQUIRED`` but the version."""
    path = Path(path)
    card = {"format_version": FORMAT_VERSION, **card}
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise ModelDirError(f"model card lacks {', '.join(missing)}")
    if list(card["class_names"]) != list(CLASS_NAMES):
        raise ModelDirError(f"class order must be {list(CLASS_NAMES)}, got {card['class_names']}")
    if card["tta"] not in TTA_VIEWS:
        raise ModelDirError(f"tta must be one of {TTA_VIEWS}, got {card['tta']!r}")
    # The shipped student carries nothing training-only: no hooks, contiguous fp32 tensors.
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        raise ModelDirError("refusing to save a network with forward hooks attached (training-only style mixers?)")
    state = {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    weights = write_atomic(path / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    card["parameters"] = int(sum(v.numel() for v in state.values() if v.is_floating_point()))
    card["weights"] = {"file": WEIGHTS_NAME, "sha256": _sha256(weights)}
    write_json_atomic(path / CARD_NAME, card, nan_as_null=True)  # an undefined metric is null
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    card_path = path / CARD_NAME
    if not card_path.is_file():
        raise ModelDirError(f"{path} is not a model directory: {CARD_NAME} is missing")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelDirError(f"cannot read {card_path}: {err}") from err
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise ModelDirError(f"{card_path} lacks {', '.join(missing)}")
    if card["format_version"] > FORMAT_VERSION:
        raise ModelDirError(f"{card_path} has format {card['format_version']}; this code reads up to {FORMAT_VERSION}")
    if list(card["class_names"]) != list(CLASS_NAMES):
        raise ModelDirError(f"{card_path}: class order must be {list(CLASS_NAMES)}, got {card['class_names']}")
    if card.get("positive_class", POSITIVE_CLASS) != POSITIVE_CLASS:
        raise ModelDirError(f"{card_path}: the positive class must be {POSITIVE_CLASS!r}, "
                            f"got {card['positive_class']!r}")
    return card


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network from ``model.json`` and load ``model.safetensors`` strictly."""
    path = Path(path)
    card = read_card(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelDirError(f"{path} is not a model directory: {WEIGHTS_NAME} is missing")
    arch = card["architecture"]
    model = create_model(
        arch["backbone"], attention=arch["attention"], num_classes=arch["num_classes"], drop_rate=arch["drop_rate"]
    )
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except Exception as err:  # safetensors and torch raise several types for a bad file
        raise ModelDirError(f"weights in {weights} do not fit {arch['backbone']}: {str(err).splitlines()[0]}") from err
    model.eval().to(device).to(memory_format=torch.channels_last)
    return LoadedModel(model=model, card=card)
