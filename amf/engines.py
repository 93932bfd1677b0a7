"""Which engine scores a job: ONNX Runtime on the CPU (no torch import), torch on CUDA.

``auto`` (the default) takes ONNX Runtime for a CPU job whenever the model directory holds a
current ``model.onnx``, and falls back to torch with a warning when it does not (missing, stale,
unreadable, or no onnxruntime); the weights' hash check applies either way. ``torch`` and
``onnx`` force one; ``onnx`` then fails rather than fall back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from amf.errors import AmfError
from amf.onnx_engine import OnnxPredictor, OnnxUnusable

ENGINES = ("auto", "torch", "onnx")
log = logging.getLogger(__name__)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device, asked only where a GPU device node exists: without one
    there is no CUDA, and a CPU job should not pay for importing torch to learn it."""
    dev = Path("/dev")
    if not (any(dev.glob("nvidia[0-9]*")) or (dev / "dxg").exists()):  # dxg: CUDA under WSL2
        return False
    import torch

    return torch.cuda.is_available()


def open_predictor(path: str | Path, device: str | None = None, engine: str = "auto",
                   tta: str | None = None) -> Any:
    """A predictor for the model directory ``path``: an :class:`~amf.onnx_engine.OnnxPredictor` or an
    :class:`amf.predict.Predictor`, both with ``predict_proba``, ``threshold``, ``tta``, ``engine``, ``device``."""
    if engine not in ENGINES:
        raise AmfError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if device not in (None, "cpu", "cuda"):
        raise AmfError(f"unknown device {device!r}; choose cpu or cuda")
    if device is None:
        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        if engine == "onnx":
            raise AmfError("--engine onnx runs on the CPU only (onnxruntime's CPU build); "
                           "use --device cpu, or the torch engine for CUDA")
        if not cuda_available():
            raise AmfError("--device cuda was given but CUDA is not available here")
    elif engine in ("auto", "onnx"):
        try:
            return OnnxPredictor(path, tta=tta)
        except OnnxUnusable as err:
            if engine == "onnx":
                raise
            log.warning("ONNX Runtime engine not used: %s; falling back to torch", err)
    from amf.predict import Predictor

    return Predictor.from_dir(path, device=device, tta=tta)
