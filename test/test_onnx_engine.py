"""The CPU engine (#13): model.onnx against the torch predictor, the torch-free process, and the fallbacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SAMPLE_DIR, make_model_dir, synthetic_pages, write_job
from test_ensemble import CALIBRATION, ensemble_dir, members

from amf.card import WEIGHTS_NAME
from amf.engines import open_predictor
from amf.errors import ModelDirError
from amf.onnx_engine import ONNX_NAME, OnnxPredictor, OnnxUnusable
from amf.onnx_export import export_onnx
from amf.predict import Predictor, tta_views
from amf.preprocess import VIEW_COUNTS, dihedral_views
from amf.stacks import read_stack

OUTPUT = "multiple-mitotic-figure-classification.json"
TOLERANCE = 1e-5  # the agreement between the engines


def exported_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    export_onnx(target)
    return target


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model/ with a freshly built model.onnx (a stale local one never decides a test)."""
    target = tmp_path_factory.mktemp("shipped") / "model"
    shutil.copytree(REPO / "model", target, ignore=shutil.ignore_patterns(ONNX_NAME))
    export_onnx(target)
    return target


def test_onnx_tta_views_are_the_torch_views_in_the_same_order() -> None:
    pages = synthetic_pages(3, 16)
    for tta, count in VIEW_COUNTS.items():
        ours = dihedral_views(pages, tta)
        theirs = torch.cat(tta_views(torch.from_numpy(pages).permute(0, 3, 1, 2), tta)).permute(0, 2, 3, 1).numpy()
        assert ours.shape == (count * 3, 16, 16, 3)
        np.testing.assert_array_equal(ours, theirs)


def stack_pages() -> dict[str, list[np.ndarray]]:
    stacks = {"test/input": read_stack(next((REPO / "test/input/images").rglob("*.tif*")))}
    sample = SAMPLE_DIR / "input/images/stacked-histopathology-roi-cropouts/stack_5.tiff"
    if sample.is_file():
        stacks["organizer sample"] = read_stack(sample)
    return stacks


@pytest.mark.parametrize("tta", ["none", "dihedral4"])
def test_engines_agree_on_the_shipped_model(shipped: Path, tta: str) -> None:
    onnx_engine, torch_engine = OnnxPredictor(shipped, tta=tta), Predictor.from_dir(shipped, device="cpu", tta=tta)
    for name, pages in stack_pages().items():
        got, want = onnx_engine.predict_proba(pages), torch_engine.predict_proba(pages)
        assert got.dtype == np.float64 and got.shape == (len(pages),), name
        assert np.max(np.abs(got - want)) <= TOLERANCE, name
        assert np.array_equal(got >= onnx_engine.threshold, want >= torch_engine.threshold), name


@pytest.mark.parametrize("calibration", [CALIBRATION, {"kind": "platt", "scale": 0.6, "bias": -1.1}])
def test_a_calibrated_ensemble_is_one_graph_that_matches_torch(tmp_path: Path, calibration: dict) -> None:
    folder = ensemble_dir(tmp_path / "ens", members(3), calibration=calibration)
    export_onnx(folder)
    engine = OnnxPredictor(folder)
    assert engine.calibration == calibration and engine.members == 3 and engine.tta == "flip2"
    pages = np.random.default_rng(1).integers(0, 256, (7, 80, 50, 3), dtype=np.uint8)  # prepared to 64 px
    want = Predictor.from_dir(folder, device="cpu").predict_proba(pages)
    np.testing.assert_allclose(engine.predict_proba(pages), want, atol=TOLERANCE, rtol=0)
    assert np.ptp(want) > 1e-3  # the pages are told apart, so agreement means something


def test_batches_larger_than_one_run_give_the_same_answer(shipped: Path) -> None:
    pages = synthetic_pages(9)
    whole = OnnxPredictor(shipped, tta="dihedral4").predict_proba(pages)
    chunked = OnnxPredictor(shipped, tta="dihedral4", batch_size=8).predict_proba(pages)  # 2 pages a run
    np.testing.assert_allclose(chunked, whole, atol=1e-6, rtol=0)
    assert OnnxPredictor(shipped).predict_proba(np.zeros((0, 128, 128, 3), np.uint8)).shape == (0,)


def process_in_subprocess(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """process.py's main in a fresh interpreter that reports, after the job, which heavy modules it loaded."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['process.py', *{[str(a) for a in args]!r}]\n"
            "try:\n    runpy.run_path('process.py', run_name='__main__')\n"
            "except SystemExit as done:\n    code = done.code\n"
            "print('LOADED', sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))\n"
            "sys.exit(code)\n")
    env = {**os.environ, "AMF_BAKED_MODEL": "/nonexistent"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=env)


def test_a_cpu_job_imports_neither_torch_nor_timm(shipped: Path, tmp_path: Path) -> None:
    result = process_in_subprocess("--input", REPO / "test/input", "--output", tmp_path, "--model", shipped,
                                   "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    assert "engine onnxruntime" in result.stderr
    got = json.loads((tmp_path / OUTPUT).read_text())
    want = json.loads((REPO / "test/expected_output.json").read_text())
    assert [e["class"] for e in got] == [e["class"] for e in want]
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(got, want, strict=True)) <= TOLERANCE


def test_the_torch_engine_is_one_flag_away_and_names_itself(shipped: Path, tmp_path: Path) -> None:
    result = process_in_subprocess("--input", REPO / "test/input", "--output", tmp_path, "--model", shipped,
                                   "--device", "cpu", "--engine", "torch")
    assert result.returncode == 0, result.stderr
    assert "engine torch" in result.stderr and "'torch'" in result.stdout


def damaged(kind: str, folder: Path) -> None:
    graph = folder / ONNX_NAME
    if kind == "missing":
        graph.unlink()
    elif kind == "garbage":
        graph.write_bytes(b"not an onnx file")
    elif kind == "stale card":  # the calibration is baked into the graph
        card = json.loads((folder / "model.json").read_text())
        card["calibration"] = {"kind": "temperature", "temperature": 2.0}
        (folder / "model.json").write_text(json.dumps(card))
    elif kind == "stale weights":  # the directory re-saved with other weights, the graph left behind
        make_model_dir(folder, seed=5)


@pytest.mark.parametrize("kind", ["missing", "garbage", "stale card", "stale weights"])
def test_an_unusable_graph_falls_back_to_torch_with_a_warning(tmp_path: Path, kind: str) -> None:
    folder = exported_copy(make_model_dir(tmp_path / "src"), tmp_path / "model")
    damaged(kind, folder)
    job = tmp_path / "job"
    write_job(job, synthetic_pages(3))
    result = process_in_subprocess("--input", job, "--output", tmp_path / "out", "--model", folder, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "ONNX Runtime engine not used" in result.stderr and "falling back to torch" in result.stderr
    assert "engine torch" in result.stderr
    forced = process_in_subprocess("--input", job, "--output", tmp_path / "forced", "--model", folder,
                                   "--engine", "onnx")
    assert forced.returncode != 0 and not (tmp_path / "forced" / OUTPUT).exists()
    assert forced.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in forced.stderr


def test_damaged_weights_are_refused_by_the_onnx_engine_too(tmp_path: Path) -> None:
    folder = exported_copy(make_model_dir(tmp_path / "src"), tmp_path / "model")
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelDirError, match=r"does not match model\.json") as caught:
        open_predictor(folder, device="cpu")
    assert not isinstance(caught.value, OnnxUnusable)  # not a fallback: torch would refuse them as well


def test_the_stale_check_compares_digests_not_dates(tmp_path: Path) -> None:
    folder = exported_copy(make_model_dir(tmp_path / "src"), tmp_path / "model")
    os.utime(folder / ONNX_NAME, (0, 0))  # older than the weights on disk, yet built from them
    assert OnnxPredictor(folder).engine.startswith("onnxruntime")
    with pytest.raises(OnnxUnusable, match="stale"):
        damaged("stale card", folder)
        OnnxPredictor(folder)


def test_export_command_checks_and_reports(tmp_path: Path) -> None:
    folder = make_model_dir(tmp_path / "model")
    result = subprocess.run([sys.executable, "-m", "amf.onnx_export", str(folder)], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "matches the torch predictor" in result.stdout and (folder / ONNX_NAME).is_file()
    bad = subprocess.run([sys.executable, "-m", "amf.onnx_export", str(tmp_path / "nothing")], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1


def test_threads_follow_the_cpus_this_process_may_use_and_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from amf.onnx_engine import default_threads
    from amf.provenance import available_cpus

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == available_cpus()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4096")
    assert default_threads() == available_cpus()  # never more than the process may use
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert default_threads() == available_cpus()


def test_the_leaderboard_builds_the_graph_once_for_a_model_without_one(tmp_path: Path) -> None:
    from leaderboard.jobs import with_current_graph

    source = make_model_dir(tmp_path / "model")
    said: list[str] = []
    scored = with_current_graph(source, tmp_path / "out", said.append)
    assert scored != source and not (source / ONNX_NAME).exists()  # the user's directory is left alone
    assert json.loads((source / "model.json").read_text()) == OnnxPredictor(scored).card
    assert "missing" in said[0] and "building it once" in said[0]
    assert with_current_graph(scored, tmp_path / "again", said.append) == scored and len(said) == 1


@pytest.mark.parametrize("input_size", [48, 128])  # resized up to the ViT's 64, and down (antialiased)
def test_a_vit_with_a_resize_exports_and_matches_torch(tmp_path: Path, input_size: int) -> None:
    from amf.model_dir import make_card, save_model_dir
    from amf.network import create_model

    kwargs = {"img_size": 64, "depth": 1, "reg_tokens": 2}
    torch.manual_seed(0)
    vit = create_model("vit_tiny_patch16_224", backbone_kwargs=kwargs)
    card = make_card(vit, backbone="vit_tiny_patch16_224", backbone_kwargs=kwargs, drop_rate=0.0,
                     input_size=input_size, resize_to=64, threshold=0.5, threshold_source="fixed, for tests",
                     tta="flip2")
    folder = save_model_dir(tmp_path / "vit", vit, card)
    export_onnx(folder)
    pages = synthetic_pages(4, 128)
    want = Predictor.from_dir(folder, device="cpu").predict_proba(pages)
    np.testing.assert_allclose(OnnxPredictor(folder).predict_proba(pages), want, atol=TOLERANCE, rtol=0)
