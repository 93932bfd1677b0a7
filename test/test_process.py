"""process.py: model resolution, end-to-end runs as the platform does them, and clean failures."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO, SAMPLE_DIR, synthetic_pages, write_job

import process
from amf.errors import ModelDirError
from amf.organizer import OUTPUT_FILENAME, validation_errors


def run_process(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "process.py"), *map(str, args)]
    full_env = {**os.environ, "AMF_BAKED_MODEL": "/nonexistent", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env, cwd=REPO)


# -- model resolution -------------------------------------------------------------------------

@pytest.fixture
def places(tmp_path: Path, model_dir: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("opt_ml", "baked", "local")}
    for path in paths.values():
        path.mkdir()
    return paths


def link_model(model_dir: Path, target: Path) -> Path:
    shutil.copytree(model_dir, target, dirs_exist_ok=True)
    return target


def resolve(places: dict[str, Path], explicit: str | None = None) -> tuple[Path, str]:
    return process.resolve_model(explicit, opt_ml=places["opt_ml"], baked=places["baked"], local=places["local"])


def test_resolution_order(places: dict[str, Path], model_dir: Path) -> None:
    with pytest.raises(ModelDirError, match="no model found"):
        resolve(places)
    link_model(model_dir, places["local"])
    assert resolve(places)[0] == places["local"]
    link_model(model_dir, places["baked"])
    assert resolve(places)[0] == places["baked"]
    link_model(model_dir, places["opt_ml"])
    assert resolve(places) == (places["opt_ml"], f"uploaded model in {places['opt_ml']}")
    assert resolve(places, str(model_dir)) == (model_dir, "given with --model")


def test_opt_ml_model_one_level_down(places: dict[str, Path], model_dir: Path) -> None:
    link_model(model_dir, places["baked"])
    nested = link_model(model_dir, places["opt_ml"] / "model")
    assert resolve(places)[0] == nested
    link_model(model_dir, places["opt_ml"] / "second")  # two candidates: ambiguous, so not used
    assert resolve(places)[0] == places["baked"]


def test_junk_in_opt_ml_falls_back(places: dict[str, Path], model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    link_model(model_dir, places["baked"])
    (places["opt_ml"] / "README").write_text("not a model")
    assert resolve(places)[0] == places["baked"]
    assert "ignoring it" in caplog.text


def test_explicit_model_must_be_a_model_dir(places: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="--model"):
        resolve(places, str(tmp_path))


def test_baked_model_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AMF_BAKED_MODEL", str(tmp_path / "baked"))
    assert process.baked_model() == tmp_path / "baked"


# -- end to end ---------------------------------------------------------------------------------

def read_output(out: Path) -> list[dict]:
    return json.loads((out / OUTPUT_FILENAME).read_text())


def test_end_to_end(tmp_path: Path, model_dir: Path) -> None:
    pages = synthetic_pages(6)
    write_job(tmp_path / "in", pages)
    result = run_process("--input", tmp_path / "in", "--output", tmp_path / "out", "--model", model_dir,
                         "--device", "cpu")
    assert result.returncode == 0, result.stderr
    entries = read_output(tmp_path / "out")
    assert validation_errors(entries, 6) == []
    for phase in ("startup", "read 6 pages", "model", "inference", "peak RSS"):
        assert phase in result.stderr
    # One entry per page, in page order: the same pages stacked in reverse give the entries in reverse.
    # (What the entries mean, P(atypical) and the class at the card's threshold, is checked against
    # arithmetic, not against the predictor, in test_oracles.py.)
    write_job(tmp_path / "reversed", pages[::-1].copy())
    result = run_process("--input", tmp_path / "reversed", "--output", tmp_path / "out_reversed", "--model",
                         model_dir, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    backwards = read_output(tmp_path / "out_reversed")[::-1]
    assert [e["class"] for e in backwards] == [e["class"] for e in entries]
    np.testing.assert_allclose([e["confidence"] for e in backwards], [e["confidence"] for e in entries], atol=1e-5)
    assert len({round(e["confidence"], 6) for e in entries}) > 1  # distinct pages, distinct scores: order shows


def test_committed_expected_output_keeps_its_pages_away_from_the_threshold() -> None:
    """A GPU (fp16) run moves confidences by ~1e-3; a committed page within the class margin of the shipped
    threshold could flip its class there, and test.sh would then skip or fail it."""
    from amf.compare import DEFAULT_MARGIN
    from amf.organizer import score_of

    threshold = json.loads((REPO / "model" / "model.json").read_text())["threshold"]
    expected = json.loads((REPO / "test" / "expected_output.json").read_text())
    assert len(expected) == 16
    near = [i for i, e in enumerate(expected) if abs(score_of(e) - threshold) < DEFAULT_MARGIN]
    assert near == [], f"pages {near} lie within {DEFAULT_MARGIN} of {threshold}: rerun test/make_fixtures.py"


def test_model_from_opt_ml_style_env(tmp_path: Path, model_dir: Path) -> None:
    """Without --model the baked model (AMF_BAKED_MODEL) is used, as inside the container."""
    write_job(tmp_path / "in", synthetic_pages(2))
    result = run_process("--input", tmp_path / "in", "--output", tmp_path / "out", "--tta", "dihedral4",
                         env={"AMF_BAKED_MODEL": str(model_dir)})
    assert result.returncode == 0, result.stderr
    assert "baked into the image" in result.stderr and "TTA dihedral4" in result.stderr
    assert len(read_output(tmp_path / "out")) == 2


def bad_job(kind: str, root: Path) -> Path:
    job = root / "in"
    if kind == "corrupt file":
        write_job(job).write_bytes(b"II*\x00" + b"\xff" * 64)
    elif kind == "empty folder":
        job.mkdir()
    elif kind == "no stack in folder":
        write_job(job)
    elif kind == "wrong slug":
        write_job(job, synthetic_pages(2), slug="some-other-interface")
    elif kind == "no pages":
        path = write_job(job)
        tifffile.imwrite(path, synthetic_pages(1)[0], photometric="rgb", subfiletype=1)
    elif kind == "missing input folder":
        pass
    return job


@pytest.mark.parametrize("kind", ["corrupt file", "empty folder", "no stack in folder", "wrong slug", "no pages",
                                  "missing input folder"])
def test_bad_input_fails_cleanly(tmp_path: Path, model_dir: Path, kind: str) -> None:
    job = bad_job(kind, tmp_path)
    out = tmp_path / "out"
    result = run_process("--input", job, "--output", out, "--model", model_dir, "--quiet")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not (out / OUTPUT_FILENAME).exists()


def test_error_is_last_line_without_traceback(tmp_path: Path) -> None:
    write_job(tmp_path / "in", synthetic_pages(1))
    result = run_process("--input", tmp_path / "in", "--output", tmp_path / "out", "--model", tmp_path)
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1].startswith("error: --model")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_nan_output_writes_nothing(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import amf.predict

    monkeypatch.setattr(amf.predict, "predict_proba", lambda model, pages, **kw: np.full(len(pages), math.nan))
    write_job(tmp_path / "in", synthetic_pages(3))
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                         "--model", str(model_dir), "--quiet"])
    assert code == 4
    err = capsys.readouterr().err
    assert err.strip().startswith("error: the model produced a non-finite"), err
    assert not (tmp_path / "out" / OUTPUT_FILENAME).exists()


def test_unexpected_error_is_one_line(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(process, "read_stack", boom)
    write_job(tmp_path / "in", synthetic_pages(1))
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                         "--model", str(model_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: unexpected RuntimeError: kaboom second line (rerun with --debug for a traceback)\n"
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                         "--model", str(model_dir), "--debug"])
    assert code == 1 and "Traceback" in capsys.readouterr().err + caplog.text  # pytest holds the log handler


def test_shipped_test_job(tmp_path: Path, model_dir: Path) -> None:
    """test/input (what test.sh feeds the container) runs and gives 16 entries."""
    result = run_process("--input", REPO / "test" / "input", "--output", tmp_path, "--model", model_dir)
    assert result.returncode == 0, result.stderr
    assert validation_errors(read_output(tmp_path), 16) == []


def test_shipped_model_reproduces_the_committed_expected_output(tmp_path: Path) -> None:
    """The shipped model/ on test/input gives test/expected_output.json on the CPU: refactors of the
    network, the model directory or preprocessing must leave the shipped predictions as they are.
    The torch engine, whatever model.onnx lies beside (test_onnx_engine.py checks that engine)."""
    result = run_process("--input", REPO / "test" / "input", "--output", tmp_path, "--model", REPO / "model",
                         "--device", "cpu", "--engine", "torch")
    assert result.returncode == 0, result.stderr
    got, want = read_output(tmp_path), json.loads((REPO / "test" / "expected_output.json").read_text())
    assert [e["class"] for e in got] == [e["class"] for e in want]
    assert max(abs(a["confidence"] - b["confidence"]) for a, b in zip(got, want, strict=True)) <= 1e-6


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="the organizer's sample job is not mounted")
def test_organizer_sample(tmp_path: Path, model_dir: Path) -> None:
    input_dir = SAMPLE_DIR / "input"
    result = run_process("--input", input_dir, "--output", tmp_path, "--model", model_dir)
    assert result.returncode == 0, result.stderr
    with tifffile.TiffFile(next((input_dir / "images").rglob("*.tif*"))) as tif:
        n_pages = len(tif.pages)
    assert validation_errors(read_output(tmp_path), n_pages) == []


# -- weights checked against model.json ----------------------------------------------------------

def flipped_weights(model_dir: Path, target: Path) -> Path:
    """A copy of the model directory with one byte of a tensor flipped: still loadable, wrong sha256."""
    shutil.copytree(model_dir, target)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's data, so safetensors would still load it
    weights.write_bytes(bytes(data))
    return target


def test_weights_mismatch_is_refused(tmp_path: Path, model_dir: Path) -> None:
    from amf.model_dir import load_model_dir

    bad = flipped_weights(model_dir, tmp_path / "model")
    with pytest.raises(ModelDirError, match=r"model\.safetensors does not match model\.json: sha256") as err:
        load_model_dir(bad)
    assert "\n" not in str(err.value)
    card = json.loads((bad / "model.json").read_text())
    del card["weights"]  # a card without the record is loaded on the strength of strict loading alone
    (bad / "model.json").write_text(json.dumps(card))
    load_model_dir(bad)


def test_process_exits_3_on_a_weights_mismatch(tmp_path: Path, model_dir: Path) -> None:
    bad = flipped_weights(model_dir, tmp_path / "model")
    write_job(tmp_path / "in", synthetic_pages(2))
    result = run_process("--input", tmp_path / "in", "--output", tmp_path / "out", "--model", bad, "--quiet")
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "does not match model.json" in lines[0], lines
    assert not (tmp_path / "out" / OUTPUT_FILENAME).exists()


@pytest.mark.parametrize(("key", "value", "says"), [("tta", "dihedral3", "tta must be one of"),
                                                    ("attention", "transformer", "architecture.attention must be")])
def test_a_card_naming_views_or_a_network_part_this_code_lacks_exits_3(
        tmp_path: Path, model_dir: Path, key: str, value: str, says: str) -> None:
    """A model fault, read off the card before any weight loads: exit 3 in one line on either engine,
    not a ValueError from deep in the torch engine (exit 1)."""
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    card = json.loads((bad / "model.json").read_text())
    if key == "attention":
        card["architecture"]["attention"] = value
    else:
        card[key] = value
    (bad / "model.json").write_text(json.dumps(card))
    write_job(tmp_path / "in", synthetic_pages(2))
    for engine in ("torch", "onnx"):
        result = run_process("--input", tmp_path / "in", "--output", tmp_path / "out", "--model", bad, "--quiet",
                             "--engine", engine)
        assert result.returncode == 3, (engine, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
        assert not (tmp_path / "out" / OUTPUT_FILENAME).exists()
