"""Write a model directory's whole predictor as ``model.onnx`` for the CPU engine (:mod:`amf.onnx_engine`).

    python -m amf.onnx_export MODEL_DIR [--out FILE] [--no-check]

Not to be confused with ``export.sh``, which packs a model directory for upload. The graph is
derived from ``model.safetensors`` + ``model.json``, so it is never committed: the Dockerfile
builds it into the image and the README's set-up command builds it locally (git-ignored).
After writing, the graph is checked against the torch predictor on random pages (1e-5).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from amf import __version__
from amf.atomic import write_atomic
from amf.card import weights_sha256
from amf.errors import AmfError, ModelDirError
from amf.model_dir import LoadedModel, load_model_dir
from amf.network import MemberEnsemble
from amf.onnx_engine import DIGEST_KEY, GRAPH_INPUT, GRAPH_OUTPUT, ONNX_NAME, graph_digest, graph_source
from amf.predict import positive_probability
from amf.preprocess import normalize

OPSET = 17
CHECK_TOLERANCE = 1e-5


def resize_matrix(side: int, size: int) -> torch.Tensor:
    """size×side A with resize_batch(x) = A·x·Aᵀ for any side×side x (the resize is separable and linear)."""
    # The identity image resized along its height only: column j is the resized unit vector e_j.
    # (Not a batch of one-pixel-wide columns: torch takes another path for width 1.)
    unit = torch.eye(side).reshape(1, 1, side, side)
    return torch.nn.functional.interpolate(unit, size=(size, side), mode="bilinear", align_corners=False,
                                           antialias=size < side)[0, 0].contiguous()


class PredictorGraph(torch.nn.Module):
    """uint8 N×H×W×3 prepared patches -> P(atypical) per patch: normalisation, every member, the
    calibration and the members' mean, as :func:`amf.predict.predict_proba` computes them with TTA none."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        model = loaded.model.eval()
        # The members as K plain networks in one graph: the tracer cannot follow functional_call.
        self.members = torch.nn.ModuleList([model.member(k) for k in range(model.num_members)]
                                           if isinstance(model, MemberEnsemble) else [model])
        self.mean, self.std = tuple(loaded.card["mean"]), tuple(loaded.card["std"])
        side = loaded.input_size
        # The resize to a ViT's native side as the linear map it is (A·x·Aᵀ), A taken from
        # resize_batch itself on the unit basis: the exporter has no antialiased bilinear, which
        # resize_batch uses when it shrinks; the map is exact either way.
        resize = (resize_matrix(side, loaded.resize_to) if loaded.resize_to and loaded.resize_to != side
                  else None)
        self.register_buffer("resize", resize, persistent=False)
        self.calibration = loaded.calibration
        self.positive_index = loaded.positive_index

    def forward(self, pages: torch.Tensor) -> torch.Tensor:
        x = normalize(pages, self.mean, self.std)
        if self.resize is not None:
            x = self.resize @ x @ self.resize.T
        logits = torch.stack([member(x) for member in self.members])  # K×N×classes, as MemberEnsemble's
        return positive_probability(logits, self.calibration, self.positive_index).mean(0)


def _legacy_export_kwargs() -> dict[str, bool]:
    # The TorchScript exporter handles this network on torch 2.5 (the image) and 2.14 (training)
    # alike; the newer export path needs onnxscript and traces differently across versions.
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def _write_graph(graph: PredictorGraph, example: torch.Tensor, tmp: Path, metadata: dict[str, str]) -> None:
    import onnx

    with torch.no_grad(), warnings.catch_warnings():
        # Known and harmless here: the legacy exporter's deprecation note, and the trace keeping
        # mean/std as constants (they are the card's, fixed for this graph).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, (example,), str(tmp), input_names=[GRAPH_INPUT], output_names=[GRAPH_OUTPUT],
                          dynamic_axes={GRAPH_INPUT: {0: "batch"}, GRAPH_OUTPUT: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, **_legacy_export_kwargs())
    proto = onnx.load(str(tmp))
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(tmp))


def check_graph(path: Path, graph: PredictorGraph, example: torch.Tensor) -> float:
    """Largest |P_onnx − P_torch| on ``example``; raises when it exceeds CHECK_TOLERANCE."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([GRAPH_OUTPUT], {GRAPH_INPUT: example.numpy()})[0]
    with torch.no_grad():
        want = graph(example).numpy()
    gap = float(np.max(np.abs(got.astype(np.float64) - want))) if len(want) else 0.0
    if not gap <= CHECK_TOLERANCE:
        raise ModelDirError(f"{path} disagrees with the torch predictor by {gap:.2e} (> {CHECK_TOLERANCE:g})")
    return gap


def export_onnx(model_dir: str | Path, out: str | Path | None = None, check: bool = True) -> tuple[Path, float | None]:
    """Write ``model.onnx`` (atomically) for ``model_dir``; returns its path and the check's gap."""
    model_dir = Path(model_dir)
    loaded = load_model_dir(model_dir, "cpu")  # checks the weights against the card's sha256
    out = Path(out) if out else model_dir / ONNX_NAME
    graph = PredictorGraph(loaded).eval()
    size = loaded.input_size
    example = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8))
    weights_sha = weights_sha256(model_dir, loaded.card)
    metadata = {DIGEST_KEY: graph_digest(loaded.card, weights_sha),
                "amf.graph_source": json.dumps(graph_source(loaded.card, weights_sha), sort_keys=True),
                "amf.version": __version__, "amf.torch": torch.__version__}
    write_atomic(out, lambda tmp: _write_graph(graph, example, tmp, metadata))
    return out, (check_graph(out, graph, example) if check else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="model directory (model.json + model.safetensors)")
    parser.add_argument("--out", type=Path, help=f"where to write the graph (default MODEL_DIR/{ONNX_NAME})")
    parser.add_argument("--no-check", action="store_true", help="skip the check against the torch predictor")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path, gap = export_onnx(args.model_dir, args.out, check=not args.no_check)
    except AmfError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except ImportError as err:
        print(f"error: {err.name or err} is needed to export (pip install -r requirements-train.txt)", file=sys.stderr)
        return 1
    except Exception as err:  # the exporter's own errors carry a whole graph dump: one line of it
        first = str(err).strip().splitlines()[0] if str(err).strip() else "no details"
        print(f"error: cannot export {args.model_dir} to ONNX ({type(err).__name__}: {first[:300]}); "
              "process.py serves it with the torch engine", file=sys.stderr)
        return 1
    checked = f"; matches the torch predictor to {gap:.1e}" if gap is not None else ""
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s{checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
