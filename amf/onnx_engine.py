"""The CPU engine: the whole predictor as one ONNX Runtime graph, with no torch or timm import.

``model.onnx`` (written by ``python -m amf.onnx_export MODEL_DIR``) holds normalisation, every
ensemble member, the calibration and the members' average: uint8 N×H×W×3 pages in, P(atypical)
out. What stays outside is numpy in :mod:`amf.preprocess` (page preparation and the TTA views,
all pages and views in one batch) and the threshold, read from ``model.json`` as the torch
engine reads it. The weights in ``model.safetensors`` stay the source of truth: the graph records
the digest of what it was built from (:func:`graph_digest`), and a graph built from other weights
or another card is refused as stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from amf.card import ModelCard, read_card, verify_weights, weights_sha256
from amf.errors import ModelDirError, PredictionError
from amf.preprocess import VIEW_COUNTS, dihedral_views, prepare_pages
from amf.provenance import available_cpus

ONNX_NAME = "model.onnx"
GRAPH_INPUT, GRAPH_OUTPUT = "pages", "p_atypical"
GRAPH_FORMAT = 1  # what the graph computes; bump when PredictorGraph changes meaning
DIGEST_KEY = "amf.graph_digest"
BUILD_HINT = "build it with: python -m amf.onnx_export {}"


class OnnxUnusable(ModelDirError):
    """``model.onnx`` cannot serve this model directory (missing, stale, unreadable, no onnxruntime);
    the torch engine can."""


def graph_source(card: dict[str, Any], weights_sha256: str) -> dict[str, Any]:
    """Everything the graph bakes in: the weights and the card keys that act before the threshold."""
    return {
        "graph_format": GRAPH_FORMAT,
        "weights_sha256": weights_sha256,
        "architecture": card["architecture"],
        "input_size": card["input_size"],
        "mean": card["mean"],
        "std": card["std"],
        "resize_to": card.get("resize_to"),
        "calibration": card.get("calibration"),
        "members": len(card.get("members") or []) or 1,
        "class_names": card["class_names"],
        "positive_class": card.get("positive_class"),
    }


def graph_digest(card: dict[str, Any], weights_sha256: str) -> str:
    text = json.dumps(graph_source(card, weights_sha256), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def default_threads() -> int:
    """The CPUs this process may really use (affinity, cgroup quota), not the host's count (a
    container limited to 2 CPUs on a 64-core host would otherwise start 64 threads), or fewer where
    ``OMP_NUM_THREADS`` says so, as it does for the torch engine (the local leaderboard sets it to
    share the CPUs among parallel jobs)."""
    cpus = available_cpus()
    try:
        asked = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return cpus
    return max(1, min(asked, cpus))


def session_options(threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    # A job makes one or two runs: threads that spin between them only steal a core from whatever
    # shares the machine (measured faster without spinning on a shared 2-core machine).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # ORT's own warnings are about graph rewrites, not about the job
    return options


class OnnxPredictor(ModelCard):
    """A model directory's ``model.onnx`` ready to score raw pages; the interface of
    :class:`amf.predict.Predictor` (``predict_proba``, ``threshold``, ``tta``, ``card``)."""

    device = "cpu"

    def __init__(self, path: str | Path, tta: str | None = None, threads: int | None = None,
                 batch_size: int = 256) -> None:
        path = Path(path)
        self.card = read_card(path)
        verify_weights(path, self.card)  # the same check as the torch engine, and it refuses
        self.digest = graph_digest(self.card, weights_sha256(path, self.card))
        self.tta = tta or self.card["tta"]
        if self.tta not in VIEW_COUNTS:
            raise ModelDirError(f"unknown TTA setting {self.tta!r}; choose one of {tuple(VIEW_COUNTS)}")
        self.batch_size = batch_size
        self.session = self._open(path, threads)
        options = self.session.get_session_options()
        self.threads = options.intra_op_num_threads
        self.engine = f"onnxruntime {self._ort_version} ({self.threads} threads)"

    def _open(self, path: Path, threads: int | None) -> Any:
        graph = path / ONNX_NAME
        if not graph.is_file():
            raise OnnxUnusable(f"{graph} is missing; {BUILD_HINT.format(path)}")
        # An offline job on a read-only file system: nothing to send, and nowhere to keep a device ID
        # (ORT would warn that it cannot). The variable must be set before the import.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise OnnxUnusable(f"onnxruntime is not installed ({err})") from err
        self._ort_version = ort.__version__
        ort.disable_telemetry_events()
        try:
            session = ort.InferenceSession(str(graph), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own types for a damaged or foreign file
            raise OnnxUnusable(f"cannot load {graph}: {' '.join(str(err).split())[:200]}") from err
        built_from = session.get_modelmeta().custom_metadata_map.get(DIGEST_KEY)
        if built_from != self.digest:
            raise OnnxUnusable(f"{graph} was built from other weights or another model.json (stale); "
                               f"{BUILD_HINT.format(path)}")
        names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if names != ([GRAPH_INPUT], [GRAPH_OUTPUT]):
            raise OnnxUnusable(f"{graph} has inputs/outputs {names}, not {GRAPH_INPUT} -> {GRAPH_OUTPUT}")
        return session

    def prepare(self, pages: Any) -> np.ndarray:
        return prepare_pages(pages, self.input_size, self.center_crop, self.stain)

    def predict_prepared(self, prepared: np.ndarray) -> np.ndarray:
        """P(atypical) of prepared uint8 N×S×S×3 patches, the mean over the TTA views (float64)."""
        n, views = len(prepared), VIEW_COUNTS[self.tta]
        if n == 0:
            return np.zeros(0, np.float64)
        step = max(1, self.batch_size // views)
        out = []
        for start in range(0, n, step):
            chunk = prepared[start : start + step]
            p = self.session.run([GRAPH_OUTPUT], {GRAPH_INPUT: dihedral_views(chunk, self.tta)})[0]
            out.append(p.reshape(views, len(chunk)).mean(0))
        return np.concatenate(out).astype(np.float64)

    def predict_proba(self, pages: Any) -> np.ndarray:
        probs = self.predict_prepared(self.prepare(pages))
        if not np.all(np.isfinite(probs)):
            raise PredictionError("the model produced a non-finite probability; refusing to write an output")
        return probs
