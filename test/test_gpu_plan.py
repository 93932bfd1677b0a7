"""benchmarks/gpu_plan.sh's ensemble part, dry-run on the CPU as its header says: the five folds of
the recipe that ships next train, and what comes back (parts under 16 MiB) joins into a model
directory that loads and the records that ship_model.sh needs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from test_training import make_dataset

from amf.model_dir import load_model_dir, read_card
from benchmarks.answers import SHIPS_NEXT

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_ensemble_part_brings_back_a_model_and_its_records(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=40).parent
    out = tmp_path / "out"
    out.mkdir()
    extra = ("data.input_size=64 optim.batch_size=8 model.pretrained=none model.backbone=mobilenetv2_050 "
             "run.threads=1 mix.stages=[blocks.1,blocks.3]")
    proc = subprocess.run(["bash", "benchmarks/gpu_plan.sh", "ensemble"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "GPU_PLAN_DEVICE": "cpu", "GPU_PLAN_QUICK": "1",
                                            "GPU_DATA": str(data), "OUT": str(out), "PYTHON": sys.executable,
                                            "GPU_PLAN_ENSEMBLE_EXTRA": extra, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    parts = sorted(out.glob("ensemble.tgz.part-*"))
    assert parts and all(p.stat().st_size < 16 * 2**20 for p in parts)
    joined = tmp_path / "joined"
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts)), mode="r:gz") as tar:
        tar.extractall(joined, filter="data")
    model = joined / "ensemble" / "model"
    load_model_dir(model)
    card = read_card(model)
    assert len(card["members"]) == 5 and card["center_crop"] == 64
    assert all(o.split("=", 1)[1] in json.dumps(card["provenance"]["config"]) for o in SHIPS_NEXT)
    records = sorted(p.name for p in (joined / "ensemble-records").iterdir())
    assert records == ["ensemble_report.json", *(f"fold-{k}.json" for k in range(5)), "reliability.png"]
    # each fold's out-of-fold predictions come back beside the model, so ship_model.sh can run its TTA check
    from benchmarks.tta_oof import main as tta_oof
    from benchmarks.tta_oof import rule_pick

    status = tta_oof(["--run", str(joined / "ensemble"), "--bootstrap", "20", "--results", str(tmp_path / "tta"),
                      "--model", str(model)])
    raw = json.loads((tmp_path / "tta" / "tta_oof.json").read_text())
    assert raw["folds"] == 5 and status == (0 if rule_pick(raw) in (None, card["tta"]) else 1)
