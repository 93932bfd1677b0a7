"""The model directory, the contract between training and inference.

A model directory holds ``model.safetensors`` (weights only, no pickle) and ``model.json``,
which describes everything needed to rebuild and use the network: architecture, input size,
normalisation, class order, decision threshold, TTA views, provenance and validation metrics.
Nothing outside this module reads the weights directly.

Format 1: one network, fp32 weights. Format 2 adds what a format-1 reader would silently get
wrong, so such a reader refuses it: ``members`` (K networks of one architecture in the one
safetensors file, keys prefixed ``member.<k>.``, stored in fp16 and upcast to fp32 on load;
the members' calibrated probabilities are averaged), ``calibration`` (a temperature applied to
each member's logits), ``center_crop`` (> 0) and ``resize_to`` (a ViT's native input side: the
input_size patch is resized to it on the device). A directory is written in the lowest format
that holds it, so a plain single network stays format 1. ``architecture.backbone_kwargs`` (the
timm keyword arguments of a ViT) needs no new format: a reader without it fails the strict load.
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
from amf.network import AtypicalClassifier, MemberEnsemble, create_model
from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD

FORMAT_VERSION = 2  # the newest format this code reads; see format_needed for what it writes
CARD_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
TTA_VIEWS = ("none", "flip2", "dihedral4", "dihedral8")
POSITIVE_CLASS = CLASS_NAMES[1]
PREPROCESSING = "RGB uint8; centre crop or reflect pad to input_size, no resampling; ImageNet normalisation"
MEMBER_PREFIX = "member.{}."
CALIBRATION_KINDS = ("temperature",)
_REQUIRED = ("format_version", "architecture", "input_size", "mean", "std", "class_names", "threshold", "tta")


@dataclass
class LoadedModel:
    model: AtypicalClassifier | MemberEnsemble  # an ensemble returns K×N×classes logits
    card: dict[str, Any]

    @property
    def members(self) -> int:
        return len(self.card.get("members") or []) or 1

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.card.get("calibration")

    @property
    def center_crop(self) -> int:
        return int(self.card.get("center_crop") or 0)

    @property
    def resize_to(self) -> int | None:
        """The network's input side when it differs from ``input_size`` (a ViT's native size), else None."""
        return int(self.card["resize_to"]) if self.card.get("resize_to") else None

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
              backbone_kwargs: dict[str, Any] | None = None, resize_to: int | None = None) -> dict[str, Any]:
    """Every key of ``model.json`` but those :func:`save_model_dir` adds (version, parameters, weights).

    ``resize_to``: the network's input side where the input_size patch is resized on the device (a ViT's
    native size); recorded only then, so a card without it means no resize."""
    return {
        "architecture": architecture_of(model, backbone, drop_rate, backbone_kwargs),
        "input_size": int(input_size),
        "center_crop": int(center_crop),
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
        + (f"; after normalisation, bilinear resize to {resize_to}×{resize_to} on the device" if resize_to else ""),
        "provenance": provenance or {},
        "metrics": metrics or {},
    }


def format_needed(card: dict[str, Any]) -> int:
    """1 for a single network used as is; 2 once the card holds what a format-1 reader would ignore."""
    return 2 if (card.get("members") or card.get("calibration") or card.get("center_crop")
                 or card.get("resize_to")) else 1


def _check_extensions(card: dict[str, Any], where: str) -> None:
    """The format-2 keys, where present: members, calibration, center_crop."""
    members = card.get("members")
    if members is not None and (not isinstance(members, list) or not all(isinstance(m, dict) for m in members)):
        raise ModelDirError(f"{where}: members must be a list of objects, one per network")
    calibration = card.get("calibration")
    if calibration is not None:
        kind = calibration.get("kind") if isinstance(calibration, dict) else None
        if kind not in CALIBRATION_KINDS:
            raise ModelDirError(f"{where}: unknown calibration {kind!r}; this code knows {CALIBRATION_KINDS}")
        t = calibration.get("temperature")
        if not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ModelDirError(f"{where}: the calibration temperature must be a positive number, got {t!r}")
    crop = card.get("center_crop") or 0
    if not isinstance(crop, int) or not 0 <= crop <= int(card["input_size"]):
        raise ModelDirError(f"{where}: center_crop must be 0 (off) or 1..input_size, got {crop!r}")
    resize = card.get("resize_to")
    if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
        raise ModelDirError(f"{where}: resize_to must be a positive integer (the network's input side), "
                            f"got {resize!r}")


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
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise ModelDirError(f"model card lacks {', '.join(missing)}")
    if list(card["class_names"]) != list(CLASS_NAMES):
        raise ModelDirError(f"class order must be {list(CLASS_NAMES)}, got {card['class_names']}")
    if card["tta"] not in TTA_VIEWS:
        raise ModelDirError(f"tta must be one of {TTA_VIEWS}, got {card['tta']!r}")
    _check_extensions(card, "model card")
    path.mkdir(parents=True, exist_ok=True)
    weights = write_atomic(path / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    card["parameters"] = parameters
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    card["weights"] = {"file": WEIGHTS_NAME, "sha256": _sha256(weights), "dtype": ",".join(dtypes)}
    write_json_atomic(path / CARD_NAME, card, nan_as_null=True)  # an undefined metric is null
    return path


def save_model_dir(path: str | Path, model: AtypicalClassifier, card: dict[str, Any]) -> Path:
    """Write weights (fp32) and card. ``card`` must hold at least the keys in ``_REQUIRED`` but the version."""
    _refuse_hooks(model)
    state = _detached(model.state_dict(), torch.float32)
    return _write(Path(path), state, card, int(sum(v.numel() for v in state.values() if v.is_floating_point())))


def save_ensemble_dir(path: str | Path, members: list[AtypicalClassifier], card: dict[str, Any],
                      member_cards: list[dict[str, Any]], calibration: dict[str, Any] | None = None,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write K networks of one architecture as one format-2 directory.

    Their weights share ``model.safetensors`` under ``member.<k>.`` prefixes, in ``dtype`` (fp16
    halves the directory; the loader upcasts to fp32). ``member_cards`` describe the members (fold,
    metrics) in order; ``calibration`` (``{"kind": "temperature", "temperature": T, ...}``) applies
    to each member's logits before the members' probabilities are averaged.
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
    if not isinstance(card["format_version"], int) or card["format_version"] < 1:
        raise ModelDirError(f"{card_path}: format_version must be a positive integer, got {card['format_version']!r}")
    if card["format_version"] > FORMAT_VERSION:
        raise ModelDirError(f"{card_path} has format {card['format_version']}, but this code reads formats up to "
                            f"{FORMAT_VERSION}: update the code (a newer checkout or container image) to use it")
    if list(card["class_names"]) != list(CLASS_NAMES):
        raise ModelDirError(f"{card_path}: class order must be {list(CLASS_NAMES)}, got {card['class_names']}")
    if card.get("positive_class", POSITIVE_CLASS) != POSITIVE_CLASS:
        raise ModelDirError(f"{card_path}: the positive class must be {POSITIVE_CLASS!r}, "
                            f"got {card['positive_class']!r}")
    _check_extensions(card, str(card_path))
    return card


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
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelDirError(f"{path} is not a model directory: {WEIGHTS_NAME} is missing")
    record = card.get("weights")
    recorded = record.get("sha256") if isinstance(record, dict) else None
    if recorded:  # model.json records it (save_model_dir); a card without it is checked by loading alone
        actual = _sha256(weights)
        if actual != str(recorded).lower():
            raise ModelDirError(f"{weights} does not match {CARD_NAME}: sha256 {actual[:16]}..., the card records "
                                f"{str(recorded)[:16]}... (damaged or replaced weights; copy the model directory "
                                "again or re-export it)")
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
