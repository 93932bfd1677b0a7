"""Shared fixtures: a tiny random-weight model directory and synthetic stacks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SAMPLE_DIR = REPO.parent / "shared/data/midog25-t2-sample"  # the organizer's sample job, when mounted


def make_model_dir(path: str | Path, **overrides: Any) -> Path:
    """A loadable model directory with random (seeded) weights; ``overrides`` replace card keys."""
    import torch

    from amf.model_dir import architecture_of, save_model_dir
    from amf.network import create_model
    from amf.preprocess import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(int(overrides.pop("seed", 0)))
    backbone = overrides.pop("backbone", "tf_efficientnet_lite0")
    model = create_model(backbone)
    card = {
        "architecture": architecture_of(model, backbone, 0.2),
        "input_size": 128,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "class_names": ["normal", "atypical"],
        "threshold": 0.5,
        "tta": "none",
    }
    card.update(overrides)
    return save_model_dir(path, model, card)


def synthetic_pages(n: int = 4, size: int = 128, seed: int = 0) -> np.ndarray:
    """n random RGB uint8 pages, distinct from each other so page order is testable."""
    rng = np.random.default_rng(seed)
    pages = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    pages[:, 0, 0, 0] = np.arange(n, dtype=np.uint8)  # a page-index mark
    return pages


def write_job(input_dir: Path, pages: np.ndarray | None = None, name: str = "stack.tiff",
              slug: str = "stacked-histopathology-roi-cropouts") -> Path:
    """A Grand Challenge style job folder: inputs.json + images/<slug>/<name>."""
    import json

    import tifffile

    folder = input_dir / "images" / slug
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"file": None, "image": {"name": name}, "value": None,
             "interface": {"slug": slug, "kind": "Image", "super_kind": "Image",
                           "relative_path": f"images/{slug}", "example_value": None}}
    (input_dir / "inputs.json").write_text(json.dumps([entry], indent=4))
    if pages is not None:
        tifffile.imwrite(folder / name, pages, photometric="rgb", compression="zlib")
    return folder / name


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model") / "model")
