"""P(atypical) for a batch of pages: one forward pass for all pages, all TTA views and all ensemble members."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amf import CLASS_NAMES
from amf.errors import PredictionError
from amf.model_dir import LoadedModel, load_model_dir
from amf.network import AtypicalClassifier
from amf.preprocess import VIEW_COUNTS, normalize, prepare_pages

POSITIVE_INDEX = CLASS_NAMES.index("atypical")


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """Dihedral views of an N×C×H×W batch: mitotic figures have no preferred orientation."""
    if tta == "none":
        return [x]
    flips = [x, x.flip(3)]
    if tta == "flip2":
        return flips
    rotated = [torch.rot90(v, 2, dims=(2, 3)) for v in flips]
    if tta == "dihedral4":
        return flips + rotated
    if tta == "dihedral8":
        quarter = [torch.rot90(v, k, dims=(2, 3)) for v in flips for k in (1, 3)]
        return flips + rotated + quarter
    raise ValueError(f"unknown TTA setting {tta!r}")


def autocast_for(device: torch.device, enabled: bool = True, cpu_bf16: bool = False) -> torch.autocast:
    """The one mixed-precision policy: fp16 autocast on CUDA (the T4 has no fast bf16); fp32 on the
    CPU unless ``cpu_bf16``, which training may ask for and inference never does (it moves pages
    near the threshold)."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cpu" and cpu_bf16)


def _view_logits(model: torch.nn.Module, pages: np.ndarray | torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], tta: str, batch_size: int, amp: bool,
                 resize_to: int | None = None) -> Iterator[tuple[torch.Tensor, int]]:
    """Per batch of pages: the logits of all its TTA views in one forward, (K×)(V·n)×classes view-major,
    and n. Always in eval mode (BN running statistics, no dropout, no style mixing), whatever the
    caller's mode: training validates its student mid-run, and a train-mode score is not the shipped one."""
    device = next(model.parameters()).device
    batch = torch.as_tensor(pages)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(batch), batch_size):
            x = normalize(batch[start : start + batch_size].to(device, non_blocking=True), mean, std, resize_to)
            views = tta_views(x, tta)
            with autocast_for(device, amp):
                logits = model(torch.cat(views).contiguous(memory_format=torch.channels_last))
            yield logits, len(x)
    finally:
        model.train(was_training)


def calibrated(logits: torch.Tensor, calibration: dict[str, Any] | None,
               positive_index: int = POSITIVE_INDEX) -> torch.Tensor:
    """Logits as the card's calibration sees them (none: unchanged). ``temperature``: divided by T.
    ``platt``: every logit times ``scale``, plus ``bias`` on the positive class's; a two-class softmax
    sees only the margin, so P(atypical) becomes sigmoid(scale · margin + bias), Platt's form."""
    if calibration is None:
        return logits
    kind = calibration.get("kind")
    if kind == "temperature":
        return logits / float(calibration["temperature"])
    if kind == "platt":
        bias = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
        bias[positive_index] = float(calibration["bias"])
        return logits * float(calibration["scale"]) + bias
    raise PredictionError(f"unknown calibration {kind!r}")


def positive_probability(logits: torch.Tensor, calibration: dict[str, Any] | None, positive_index: int) -> torch.Tensor:
    """P(atypical) of each row of (K×)rows×classes logits: calibrated, softmax, the positive column."""
    return torch.softmax(calibrated(logits.float(), calibration, positive_index), dim=-1)[..., positive_index]


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    pages: np.ndarray | torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    tta: str = "none",
    batch_size: int = 256,
    amp: bool = True,
    positive_index: int = POSITIVE_INDEX,
    calibration: dict[str, Any] | None = None,
    resize_to: int | None = None,
) -> np.ndarray:
    """P(atypical) for prepared uint8 N×H×W×3 pages, averaged over the TTA views' probabilities.
    ``resize_to``: the network's input side (the card's), where it differs from the pages'.

    With a :class:`~amf.network.MemberEnsemble` (K×N×classes logits) the average runs over members
    and views alike; ``calibration`` applies to each member's (and view's) logits before the softmax.
    """
    out = []
    for logits, n in _view_logits(model, pages, mean, std, tta, batch_size, amp, resize_to):
        probs = positive_probability(logits, calibration, positive_index)
        out.append(probs.reshape(-1, n).mean(0).cpu())  # rows: members × views
    if not out:
        return np.zeros(0, np.float64)
    return torch.cat(out).double().numpy()


@torch.no_grad()
def predict_view_logits(model: AtypicalClassifier, pages: np.ndarray | torch.Tensor, *, mean: Sequence[float],
                        std: Sequence[float], tta: str = "dihedral4", batch_size: int = 256,
                        amp: bool = True, resize_to: int | None = None) -> np.ndarray:
    """One network's raw logits for every page and TTA view, N×V×classes float32 (the views in
    :func:`tta_views` order, so the first is the page as it is and ``flip2`` ⊂ ``dihedral4`` ⊂ ``dihedral8``)."""
    out = []
    for logits, n in _view_logits(model, pages, mean, std, tta, batch_size, amp, resize_to):
        out.append(logits.float().reshape(-1, n, logits.shape[-1]).transpose(0, 1).cpu())
    if not out:
        return np.zeros((0, VIEW_COUNTS[tta], 2), np.float32)
    return torch.cat(out).numpy()


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """A loaded model directory ready to score raw pages (any dtype, channels or size)."""

    def __init__(self, loaded: LoadedModel, tta: str | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.card = loaded.card
        self.tta = tta or loaded.card["tta"]
        self.threshold = loaded.threshold
        self.calibration = loaded.calibration
        self.device = next(self.model.parameters()).device
        self.engine = f"torch {torch.__version__} ({self.device.type}" + (
            f", {torch.get_num_threads()} threads)" if self.device.type == "cpu" else ")")

    @classmethod
    def from_dir(cls, path: str | Path, device: str | None = None, tta: str | None = None) -> Predictor:
        return cls(load_model_dir(path, pick_device(device)), tta=tta)

    def prepare(self, pages: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        return prepare_pages(pages, self.loaded.input_size, self.loaded.center_crop, self.loaded.stain)

    def predict_proba(self, pages: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        probs = predict_proba(
            self.model, self.prepare(pages), mean=self.card["mean"], std=self.card["std"], tta=self.tta,
            positive_index=self.loaded.positive_index, calibration=self.calibration, resize_to=self.loaded.resize_to,
        )
        if not np.all(np.isfinite(probs)):
            raise PredictionError("the model produced a non-finite probability; refusing to write an output")
        return probs
