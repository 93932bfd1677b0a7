"""Grand Challenge entry point, MIDOG 2025 Track 2: one stack in, one classification per page out.

    python process.py [--input /input] [--output /output] [--model DIR] [--device cpu|cuda]
                      [--engine auto|torch|onnx] [--tta VIEWS]

Reads ``inputs.json`` and the stack under ``images/stacked-histopathology-roi-cropouts/`` and
writes ``multiple-mitotic-figure-classification.json``. A CPU job runs the model directory's
``model.onnx`` on ONNX Runtime and never imports torch; CUDA runs torch (amf/engines.py).
On any failure it prints one line ``error: ...`` to stderr, exits non-zero and writes no output file.
"""

# ruff: noqa: E402  (the clock starts before the heavy imports)
from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports, so the log shows what they cost

import argparse
import logging
import os
import resource
import sys
from pathlib import Path

from amf import organizer
from amf.card import TTA_VIEWS, is_model_dir
from amf.engines import ENGINES, open_predictor
from amf.errors import AmfError, ModelDirError
from amf.stacks import read_stack

log = logging.getLogger("process")
HERE = Path(__file__).resolve().parent
OPT_ML_MODEL = Path("/opt/ml/model")  # where Grand Challenge extracts an uploaded model tarball


def baked_model() -> Path:
    return Path(os.environ.get("AMF_BAKED_MODEL", "/opt/algorithm/model"))


def _model_in(folder: Path) -> Path | None:
    """``folder`` itself, or its single model subfolder (a tarball of the folder adds a level)."""
    if is_model_dir(folder):
        return folder
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir() if is_model_dir(p))
        if len(found) == 1:
            return found[0]
    return None


def resolve_model(explicit: str | None, opt_ml: Path = OPT_ML_MODEL, baked: Path | None = None,
                  local: Path = HERE / "model") -> tuple[Path, str]:
    """The model directory to use and why: --model, /opt/ml/model, the baked model, ./model."""
    if explicit:
        path = Path(explicit)
        if not is_model_dir(path):
            raise ModelDirError(f"--model {path} is not a model directory (model.json + model.safetensors)")
        return path, "given with --model"
    found = _model_in(opt_ml)
    if found:
        return found, f"uploaded model in {opt_ml}"
    if opt_ml.is_dir() and any(opt_ml.iterdir()):
        log.warning("%s has files but no model.json + model.safetensors; ignoring it", opt_ml)
    baked = baked or baked_model()
    for path, why in ((baked, "baked into the image"), (local, "next to process.py")):
        if is_model_dir(path):
            return path, why
    raise ModelDirError(f"no model found: looked in {opt_ml}, {baked} and {local}")


def peak_memory(device) -> str:
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    text = f"peak RSS {rss_mib:.0f} MiB"
    if str(device).startswith("cuda"):
        import torch

        text += f", CUDA max allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    return text


def run(args: argparse.Namespace) -> Path:
    log.info("startup (imports) %.2f s", time.perf_counter() - STARTED)
    t = time.perf_counter()
    stack, how = organizer.find_stack(args.input)
    pages = read_stack(stack)
    log.info("read %d pages from %s (%s) in %.2f s", len(pages), stack, how, time.perf_counter() - t)

    t = time.perf_counter()
    model_path, why = resolve_model(args.model)
    predictor = open_predictor(model_path, device=args.device, engine=args.engine, tta=args.tta)
    log.info("model %s (%s), engine %s, device %s, TTA %s, threshold %.4f; loaded in %.2f s",
             model_path, why, predictor.engine, predictor.device, predictor.tta, predictor.threshold,
             time.perf_counter() - t)

    t = time.perf_counter()
    probs = predictor.predict_proba(pages)
    log.info("inference %.3f s", time.perf_counter() - t)

    t = time.perf_counter()
    out = organizer.write_output(args.output, organizer.to_entries(probs, predictor.threshold), len(pages))
    log.info("wrote %s in %.3f s; %s; total %.2f s", out, time.perf_counter() - t, peak_memory(predictor.device),
             time.perf_counter() - STARTED)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="/input", help="job input folder (default /input)")
    parser.add_argument("--output", default="/output", help="job output folder (default /output)")
    parser.add_argument("--model", help="model directory (default: /opt/ml/model, then the baked model, ./model)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="auto (default): ONNX Runtime on the CPU when model.onnx is current, else torch")
    parser.add_argument("--tta", choices=TTA_VIEWS, help="test-time views (default: the model card's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--debug", action="store_true", default=os.environ.get("AMF_DEBUG") == "1",
                        help="print tracebacks (also AMF_DEBUG=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        run(args)
    except AmfError as err:
        if args.debug:
            log.exception("traceback")
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Exception as err:  # anything else still ends as one readable line
        if args.debug:
            log.exception("traceback")
        detail = " ".join(str(err).split()) or "no details"
        print(f"error: unexpected {type(err).__name__}: {detail} (rerun with --debug for a traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
