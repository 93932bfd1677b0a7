"""Reinhard stain normalisation per patch: each page's colour statistics in CIELAB mapped onto a target's.

Reinhard et al. (2001) transfer colour by matching each LAB channel's mean and standard deviation to a
reference's. Here every patch is matched on its own, from the statistics of the whole fitted patch (the
figure and the tissue around it) before any centre crop, so a scanner's or a lab's colour cast is gone
before the network sees the pixels. The target is not one hand-picked image: it is the mean of the
per-patch statistics over every patch a training run may fit or validate on, never a held-out domain's
(``training.data.fit_stain_target``), and ``model.json`` records it so that inference applies the very
same map (:func:`amf.preprocess.prepare_page`).

numpy only: the ONNX Runtime engine imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from amf.errors import ModelDirError

METHODS = ("none", "reinhard")
# sRGB (D65) to CIE XYZ, and the D65 white point
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]], np.float32)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ.astype(np.float64)).astype(np.float32)
_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)
_DELTA = 6.0 / 29.0
# A patch whose channel barely varies (a blank page) is shifted to the target, not stretched: dividing
# by a near-zero spread would blow its noise up to the target's contrast.
MIN_STD = 1.0
_CHUNK = 256  # patches converted at once: float32 LAB of 256 patches of 128 px is 50 MB


@dataclass(frozen=True)
class StainTarget:
    """The LAB mean and standard deviation every patch is mapped onto."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_card(self) -> dict[str, Any]:
        return {"method": "reinhard", "target_mean": list(self.mean), "target_std": list(self.std)}

    @classmethod
    def from_card(cls, record: Any, where: str = "model card") -> StainTarget | None:
        """``model.json``'s ``stain_norm``; None where it is absent or off. Anything else is refused."""
        if record is None or record == {"method": "none"}:
            return None
        if not isinstance(record, dict) or record.get("method") != "reinhard":
            raise ModelDirError(f"{where}: stain_norm must be {{'method': 'reinhard', 'target_mean': [3 numbers], "
                                f"'target_std': [3 numbers]}}, got {record!r}")
        mean, std = record.get("target_mean"), record.get("target_std")
        if not (_three_numbers(mean) and _three_numbers(std) and all(s > 0 for s in std)):
            raise ModelDirError(f"{where}: stain_norm needs target_mean and target_std of 3 finite numbers each, "
                                f"the std positive; got {mean!r} and {std!r}")
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))  # type: ignore[arg-type]


def _three_numbers(values: Any) -> bool:
    return (isinstance(values, list) and len(values) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values))


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA**3, np.cbrt(t), t / (3 * _DELTA**2) + 4.0 / 29.0)


def _f_inv(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 …×3 sRGB to float32 CIELAB (L in 0..100)."""
    c = rgb.astype(np.float32) / np.float32(255.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    fx, fy, fz = np.moveaxis(_f(linear @ _RGB_TO_XYZ.T / _WHITE), -1, 0)
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1).astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float CIELAB …×3 to uint8 sRGB, out-of-gamut colours clipped."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    linear = np.clip((_f_inv(f) * _WHITE) @ _XYZ_TO_RGB.T, 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)


def lab_stats(patches: np.ndarray) -> np.ndarray:
    """Per patch of a uint8 N×H×W×3 batch, its LAB mean and standard deviation: N×2×3 float64."""
    out = np.empty((len(patches), 2, 3), np.float64)
    for start in range(0, len(patches), _CHUNK):
        lab = rgb_to_lab(patches[start:start + _CHUNK])
        out[start:start + _CHUNK, 0] = lab.mean(axis=(1, 2), dtype=np.float64)
        out[start:start + _CHUNK, 1] = lab.std(axis=(1, 2), dtype=np.float64)
    return out


def fit_target(stats: np.ndarray) -> StainTarget:
    """The target of a set of patches' :func:`lab_stats`: the mean of their means and of their spreads."""
    if not len(stats):
        raise ValueError("no patches to fit a stain target on")
    mean, std = stats.mean(axis=0)
    return StainTarget(tuple(round(float(v), 4) for v in mean),  # type: ignore[arg-type]
                       tuple(round(float(v), 4) for v in std))


def normalize_stains(patches: np.ndarray, stats: np.ndarray, target: StainTarget) -> np.ndarray:
    """uint8 N×H×W×3 patches mapped, channel by channel in LAB, from their own ``stats`` (:func:`lab_stats`
    of the patch they were cut from) onto ``target``'s. A new array; the input is untouched."""
    if len(patches) != len(stats):
        raise ValueError(f"{len(patches)} patches but {len(stats)} stain statistics")
    out = np.empty_like(patches)
    t_mean, t_std = np.asarray(target.mean, np.float32), np.asarray(target.std, np.float32)
    for start in range(0, len(patches), _CHUNK):
        part = stats[start:start + _CHUNK].astype(np.float32)
        mean, std = part[:, None, None, 0], np.maximum(part[:, None, None, 1], MIN_STD)
        lab = rgb_to_lab(patches[start:start + _CHUNK])
        out[start:start + _CHUNK] = lab_to_rgb((lab - mean) / std * t_std + t_mean)
    return out
