"""The one place that decides how a page becomes model input, for training and inference alike.

Two steps, kept apart because training augments between them:

1. :func:`prepare_pages` turns any page (gray, RGBA, 16-bit, float, any size) into an RGB uint8
   patch of the model's input size. Pages larger than the input are centre-cropped and smaller
   ones reflect-padded, never resized: MIDOG crops are centred on the figure and share one
   pixel spacing, so resizing would change the apparent size of the nucleus. An optional
   ``center_crop`` (0 = off; recorded in ``model.json``) then keeps only the central
   ``center_crop`` pixels and upscales them back to the input size, for models trained that way.
   A model trained with stain normalisation (``stain_norm`` in ``model.json``, :mod:`amf.stain`) has
   each patch's colours mapped onto its target last, from the statistics of the whole fitted patch.
2. :func:`normalize` turns a uint8 NHWC batch into the float NCHW tensor the network eats and,
   for a network with a native input size (a ViT, ``resize_to`` in ``model.json``), resizes it
   there, on the device (:func:`resize_batch`). Every page is resized by the same factor, so
   apparent nucleus sizes stay comparable across pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from amf.errors import InputError
from amf.stain import StainTarget, lab_stats, normalize_stains

if TYPE_CHECKING:  # torch is imported where a function needs it: the ONNX Runtime engine never loads it
    import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def to_rgb_uint8(page: np.ndarray) -> np.ndarray:
    """Any 2-D page (H×W, H×W×1, H×W×2, H×W×3, H×W×4; uint8/uint16/float) as H×W×3 uint8."""
    a = np.asarray(page)
    shape = a.shape  # as given, for the message
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or 0 in a.shape:
        raise InputError(f"a page must be a 2-D image with at least one channel, got an array of shape {shape}")
    channels = a.shape[2]
    if channels in (1, 2):  # gray, or gray + alpha
        a = np.repeat(a[..., :1], 3, axis=2)
    elif channels >= 3:  # RGB, RGBA: alpha carries no stain information
        a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return np.ascontiguousarray(a.astype(np.uint8) * 255)
    if np.issubdtype(a.dtype, np.integer):
        # 8-bit values in a wider container stay as they are; true 16-bit ranges are scaled down
        top = 255 if a.max(initial=0) <= 255 else np.iinfo(a.dtype).max
        return np.ascontiguousarray(np.clip(np.round(a.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8))
    if np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if f.max(initial=0.0) <= 1.0 else 1.0
        return np.ascontiguousarray(np.clip(np.round(f * scale), 0, 255).astype(np.uint8))
    raise InputError(f"unsupported pixel type {a.dtype}")


def fit_to_size(page: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or reflect-pad an H×W×3 page to size×size without resampling."""
    h, w = page.shape[:2]
    if h > size:
        top = (h - size) // 2
        page = page[top : top + size]
    if w > size:
        left = (w - size) // 2
        page = page[:, left : left + size]
    h, w = page.shape[:2]
    if h < size or w < size:
        pad_h, pad_w = size - h, size - w
        pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
        # reflect needs a side longer than the pad; fall back to edge for tiny pages
        mode = "reflect" if h > max(pads[0]) and w > max(pads[1]) else "edge"
        page = np.pad(page, pads, mode=mode)
    return np.ascontiguousarray(page)


def crop_and_upscale(patch: np.ndarray, crop: int) -> np.ndarray:
    """The central crop×crop pixels of a square uint8 patch, resized (bilinear) back to its size; 0: unchanged."""
    if not crop:
        return patch
    size = patch.shape[0]
    if not 0 < crop <= size:
        raise InputError(f"center_crop {crop} must lie in 1..{size} (the input size), or be 0 for off")
    from PIL import Image  # only models trained with a centre crop need it

    top = (size - crop) // 2
    centre = Image.fromarray(np.ascontiguousarray(patch[top : top + crop, top : top + crop]))
    return np.array(centre.resize((size, size), Image.Resampling.BILINEAR))


def prepare_page(page: np.ndarray, size: int, center_crop: int = 0, stain: StainTarget | None = None) -> np.ndarray:
    """One page of any kind as the size×size×3 uint8 patch the model sees. With ``stain``, its colours
    are mapped onto that target from the statistics of the whole fitted patch, taken before the crop:
    training does the same in two steps (``training.data``), from cached fitted patches."""
    fitted = fit_to_size(to_rgb_uint8(page), size)
    patch = crop_and_upscale(fitted, center_crop)
    return patch if stain is None else normalize_stains(patch[None], lab_stats(fitted[None]), stain)[0]


def prepare_pages(pages: Sequence[np.ndarray] | np.ndarray, size: int, center_crop: int = 0,
                  stain: StainTarget | None = None) -> np.ndarray:
    """Pages of any kind as one N×size×size×3 uint8 array."""
    if len(pages) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([prepare_page(p, size, center_crop, stain) for p in pages])


VIEW_COUNTS = {"none": 1, "flip2": 2, "dihedral4": 4, "dihedral8": 8}


def dihedral_views(pages: np.ndarray, tta: str) -> np.ndarray:
    """The TTA views of prepared uint8 N×H×W×3 pages as one (V·N)×H×W×3 batch, view-major, in the
    order of :func:`amf.predict.tta_views` (the torch engine's, on the device): as is, flipped
    left-right, both turned 180°, then the quarter turns. Mitotic figures have no preferred orientation."""
    if tta not in VIEW_COUNTS:
        raise ValueError(f"unknown TTA setting {tta!r}")
    flips = [pages, pages[:, :, ::-1]]
    views = [pages] if tta == "none" else flips
    if tta in ("dihedral4", "dihedral8"):
        views = flips + [np.rot90(v, 2, axes=(1, 2)) for v in flips]
    if tta == "dihedral8":
        views += [np.rot90(v, k, axes=(1, 2)) for v in flips for k in (1, 3)]
    return np.ascontiguousarray(np.concatenate(views))


def normalize(
    batch: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_to: int | None = None,
) -> torch.Tensor:
    """uint8 N×H×W×3 (or float in [0, 1] N×3×H×W) to a normalised float32 N×3×H×W tensor.

    The result is channels_last in memory, which is what the convolutions here run fastest on.
    ``resize_to``: the network's input side (:func:`resize_batch`); None leaves the size alone.
    The ONNX graph (:mod:`amf.onnx_export`) is this function traced, so both engines share it.
    """
    import torch

    x = batch.permute(0, 3, 1, 2).float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = ((x - m) / s).contiguous(memory_format=torch.channels_last)
    return resize_batch(x, resize_to) if resize_to else x


@dataclass(frozen=True)
class ModelInput:
    """How prepared uint8 patches become one network's input: its normalisation and its input side."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize_to: int | None = None  # None: the patch size as it is

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return normalize(batch, self.mean, self.std, self.resize_to)

    def kwargs(self) -> dict[str, Any]:
        """As keyword arguments of ``amf.predict.predict_proba``."""
        return {"mean": self.mean, "std": self.std, "resize_to": self.resize_to}


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A float N×3×H×W batch resized to size×size: bilinear, antialiased when it shrinks; unchanged at that size."""
    import torch

    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    out = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                          antialias=shrink)
    return out.contiguous(memory_format=torch.channels_last)
