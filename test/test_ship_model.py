"""scripts/ship_model.sh refuses, before it touches model/, an ensemble it cannot check: one shipped
without its folds' out-of-fold predictions beside it, which the TTA rule needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from amf.model_dir import read_card

REPO = Path(__file__).resolve().parents[1]


def test_an_ensemble_without_its_folds_predictions_is_refused_and_model_stays(tmp_path: Path) -> None:
    assert read_card(REPO / "model").get("members"), "the shipped model is an ensemble"
    checkout = tmp_path / "checkout"  # the script works in the checkout that holds it
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "ship_model.sh", checkout / "scripts")
    for package in ("amf", "benchmarks", "training"):
        (checkout / package).symlink_to(REPO / package)
    shutil.copytree(REPO / "model", checkout / "model", ignore=shutil.ignore_patterns("*.onnx"))
    run = tmp_path / "run"
    shutil.copytree(REPO / "model", run / "model", ignore=shutil.ignore_patterns("*.onnx"))
    before = sorted(p.name for p in checkout.iterdir())
    proc = subprocess.run(["bash", str(checkout / "scripts" / "ship_model.sh"), str(run / "model")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"error: {run / 'model'} is an ensemble without its folds' out-of-fold "
                                  f"predictions beside it ({run}/fold-k/val_predictions.npz)")
    assert sorted(p.name for p in checkout.iterdir()) == before
    assert (checkout / "model" / "model.json").read_bytes() == (REPO / "model" / "model.json").read_bytes()


def test_a_latency_baseline_without_a_model_is_refused_before_anything_moves(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "ship_model.sh", checkout / "scripts")
    (checkout / "model").mkdir()
    (checkout / "model" / "model.json").write_text("{}", encoding="utf-8")
    proc = subprocess.run(["bash", str(checkout / "scripts" / "ship_model.sh"), str(tmp_path / "new"), "--latency",
                           str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {tmp_path / 'nowhere'} holds no model.json\n"
    assert (checkout / "model" / "model.json").read_text(encoding="utf-8") == "{}"
