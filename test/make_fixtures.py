"""Write the container test job ``test/input`` and, with ``--expected``, its expected output.

The 16-page stack is synthetic and deterministic: H&E-like 128×128 patches (pink stroma,
purple nuclei) with a dark mitosis-like figure at the centre, as in the organizer's crops
(metaphase plates, anaphase pairs, clumps, and atypical-looking tripolar and lagging shapes).
It exercises the pipeline, not the model's accuracy. Saved like the organizer's sample stack:
one multi-page, Deflate-compressed RGB TIFF with the resolution set. Its pages are the first
candidates whose P(atypical) under the model lies at least MARGIN from the model's threshold, so
that a GPU (fp16) run, compared class by class, cannot flip one.

    python test/make_fixtures.py                 # (re)write test/input
    python test/make_fixtures.py --expected      # also test/expected_output.json from model/
    python test/make_fixtures.py --expected --keep-input --model DIR --expected-path /tmp/e.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amf.organizer import SLUG  # noqa: E402
from leaderboard.layout import inputs_json  # noqa: E402

STACK_NAME = "stack_test.tiff"
SIZE = 128
N_PAGES = 16
MARGIN = 0.02  # amf.compare's class margin for GPU runs
CANDIDATES = 64
PIXELS_PER_INCH = 101_600.0  # 0.25 µm per pixel, the MIDOG scanners' resolution

STROMA = np.array([236, 178, 204], np.float64)
NUCLEUS = np.array([128, 84, 162], np.float64)
CHROMATIN = np.array([52, 26, 84], np.float64)


def smooth_noise(rng: np.random.Generator, cells: int, amplitude: float) -> np.ndarray:
    """Low-frequency texture: a coarse random grid, upsampled and box-blurred."""
    coarse = rng.normal(0.0, amplitude, (cells, cells))
    field = np.kron(coarse, np.ones((SIZE // cells, SIZE // cells)))
    kernel = SIZE // cells
    for axis in (0, 1):
        field = np.apply_along_axis(lambda v: np.convolve(v, np.ones(kernel) / kernel, mode="same"), axis, field)
    return field


def ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1]."""
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    return np.clip(1.5 - np.hypot(u, v) * 1.5, 0.0, 1.0) ** 0.5


def figure_mask(kind: str, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The dark centred figure; kinds loosely follow normal and atypical mitotic phases."""
    c = SIZE / 2 + rng.uniform(-3, 3, 2)
    angle = rng.uniform(0, np.pi)
    parts: list[np.ndarray] = []
    if kind == "metaphase":  # one dense plate
        parts.append(ellipse(yy, xx, c[0], c[1], 4, 14, angle))
    elif kind == "anaphase":  # two parallel plates
        d = np.array([np.cos(angle + np.pi / 2), np.sin(angle + np.pi / 2)]) * 8
        parts += [ellipse(yy, xx, c[0] + d[1], c[1] + d[0], 3, 12, angle),
                  ellipse(yy, xx, c[0] - d[1], c[1] - d[0], 3, 12, angle)]
    elif kind == "prophase":  # condensed clump
        for _ in range(7):
            o = rng.normal(0, 4, 2)
            parts.append(ellipse(yy, xx, c[0] + o[0], c[1] + o[1], 3, 5, rng.uniform(0, np.pi)))
    elif kind == "tripolar":  # three arms, an atypical pattern
        for k in range(3):
            a = angle + k * 2 * np.pi / 3
            parts.append(ellipse(yy, xx, c[0] + 8 * np.sin(a), c[1] + 8 * np.cos(a), 3, 9, a))
    else:  # lagging: a plate with stray chromosomes beside it
        parts.append(ellipse(yy, xx, c[0], c[1], 4, 12, angle))
        for _ in range(3):
            o = rng.uniform(-16, 16, 2)
            parts.append(ellipse(yy, xx, c[0] + o[0], c[1] + o[1], 2, 2, 0.0))
    return np.clip(np.max(parts, axis=0), 0, 1)


def make_page(index: int) -> np.ndarray:
    rng = np.random.default_rng(2025 + index)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    image = np.broadcast_to(STROMA, (SIZE, SIZE, 3)).copy()
    image += smooth_noise(rng, 8, 10.0)[..., None] * np.array([0.6, 1.0, 0.8])
    nuclei = np.zeros((SIZE, SIZE))
    for _ in range(rng.integers(4, 9)):
        cy, cx = rng.uniform(0, SIZE, 2)
        if np.hypot(cy - SIZE / 2, cx - SIZE / 2) < 24:  # keep the centre for the figure
            continue
        nuclei = np.maximum(nuclei, ellipse(yy, xx, cy, cx, *rng.uniform(6, 11, 2), rng.uniform(0, np.pi)))
    image = image * (1 - nuclei[..., None]) + NUCLEUS * nuclei[..., None]
    kinds = ("metaphase", "anaphase", "prophase", "tripolar", "lagging")
    figure = figure_mask(kinds[index % len(kinds)], yy, xx, rng)
    image = image * (1 - figure[..., None]) + CHROMATIN * figure[..., None]
    # No per-pixel noise: it would triple the committed file size and adds nothing to a pipeline test.
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def clear_pages(model: Path, margin: float = MARGIN) -> list[int]:
    """Indices of the first N_PAGES candidate pages at least ``margin`` from the model's threshold."""
    from amf.predict import Predictor

    predictor = Predictor.from_dir(model, device="cpu")
    pages = np.stack([make_page(i) for i in range(CANDIDATES)])
    probs = predictor.predict_proba(pages)
    chosen = [i for i in range(CANDIDATES) if abs(probs[i] - predictor.threshold) >= margin][:N_PAGES]
    if len(chosen) < N_PAGES:
        raise SystemExit(f"error: only {len(chosen)} of {CANDIDATES} candidate pages clear the threshold by {margin}")
    return chosen


def make_stack(indices: list[int]) -> np.ndarray:
    return np.stack([make_page(i) for i in indices])


def write_input(out: Path, indices: list[int]) -> Path:
    import tifffile

    folder = out / "images" / SLUG
    folder.mkdir(parents=True, exist_ok=True)
    stack = folder / STACK_NAME
    tifffile.imwrite(stack, make_stack(indices), photometric="rgb", compression="zlib", metadata=None,
                     resolution=(PIXELS_PER_INCH, PIXELS_PER_INCH), resolutionunit="INCH")
    (out / "inputs.json").write_text(json.dumps(inputs_json(STACK_NAME), indent=4) + "\n")
    return stack


def write_expected(input_dir: Path, model: Path, expected: Path) -> list[dict]:
    """Run process.py on the CPU with ``model`` and keep its output as the expected result."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO / "process.py"), "--input", str(input_dir), "--output", tmp,
               "--model", str(model), "--device", "cpu"]
        subprocess.run(cmd, check=True)
        result = json.loads((Path(tmp) / "multiple-mitotic-figure-classification.json").read_text())
    from amf.organizer import score_of

    threshold = json.loads((model / "model.json").read_text())["threshold"]
    close = [i for i, e in enumerate(result) if abs(score_of(e) - threshold) < MARGIN]
    if close:  # a GPU (fp16) run could flip these classes
        print(f"warning: pages {close} lie within {MARGIN} of the threshold {threshold}", file=sys.stderr)
    expected.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "test" / "input", help="job folder to write")
    parser.add_argument("--expected", action="store_true", help="also write the expected output")
    parser.add_argument("--model", type=Path, default=REPO / "model",
                        help="model that picks the pages and, with --expected, writes the expected output")
    parser.add_argument("--expected-path", type=Path, default=REPO / "test" / "expected_output.json")
    parser.add_argument("--keep-input", action="store_true", help="use the job folder as it is, do not rewrite it")
    args = parser.parse_args()
    if not (args.model / "model.json").is_file():
        print(f"error: no model directory at {args.model}; train or pass --model", file=sys.stderr)
        return 1
    if not args.keep_input:
        indices = clear_pages(args.model)
        stack = write_input(args.out, indices)
        print(f"wrote {stack} ({stack.stat().st_size / 1024:.0f} KiB): candidate pages {indices}")
    if args.expected:
        write_expected(args.out, args.model, args.expected_path)
        print(f"wrote {args.expected_path} with {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
