"""amf/compare.py: a GPU output against the CPU's, classes compared only away from the threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from amf.compare import DEFAULT_MARGIN, compare

THRESHOLD = 0.55


def entries(*probs: float, threshold: float = THRESHOLD) -> list[dict]:
    return [{"class": "atypical" if p >= threshold else "normal", "confidence": p} for p in probs]


def test_identical_outputs_match() -> None:
    cpu = entries(0.1, 0.9, 0.3)
    result = compare(cpu, cpu, THRESHOLD)
    assert result.ok and result.skipped == [] and result.worst == 0
    assert result.summary().startswith("3 entries; classes match on 3 compared pages (0 skipped")


def test_flip_near_the_threshold_is_skipped_and_counted() -> None:
    cpu = entries(0.1, THRESHOLD + 0.0005, THRESHOLD - 0.019, 0.9)
    gpu = entries(0.1, THRESHOLD - 0.0004, THRESHOLD - 0.019, 0.9)  # page 1 flips by 9e-4
    result = compare(gpu, cpu, THRESHOLD)
    assert result.ok, result.problems
    assert result.skipped == [1, 2] and result.class_mismatches == 0
    assert "2 skipped within 0.02 of threshold 0.5500: pages 1, 2" in result.summary()
    assert "classes match on 2 compared pages" in result.summary()


def test_flip_away_from_the_threshold_fails() -> None:
    cpu = entries(0.2, THRESHOLD + 0.02)  # exactly the margin away: compared
    gpu = [cpu[0], {"class": "normal", "confidence": THRESHOLD + 0.02}]
    result = compare(gpu, cpu, THRESHOLD)
    assert not result.ok and result.class_mismatches == 1 and result.skipped == []
    assert "page 1: class 'normal', expected 'atypical'" in result.problems[0]


def test_margin_zero_compares_every_class() -> None:
    cpu = entries(THRESHOLD + 0.0001)
    gpu = entries(THRESHOLD - 0.0001)
    assert compare(gpu, cpu, THRESHOLD).ok
    assert not compare(gpu, cpu, THRESHOLD, margin=0).ok


def test_confidence_tolerance_applies_to_skipped_pages_too() -> None:
    cpu = entries(THRESHOLD + 0.001, 0.9)
    gpu = entries(THRESHOLD + 0.001 - 0.005, 0.9)
    result = compare(gpu, cpu, THRESHOLD, tolerance=1e-3)
    assert not result.ok and result.skipped == [0] and "difference 5.00e-03 > 0.001" in result.problems[0]
    assert compare(gpu, cpu, THRESHOLD, tolerance=1e-2).ok


@pytest.mark.parametrize(("got", "want", "message"), [
    (entries(0.1), entries(0.1, 0.2), "1 entries, expected 2"),
    ({"a": 1}, entries(0.1), "JSON lists"),
    ([{"class": "normal"}], entries(0.1), "malformed"),
    (entries(float("nan")), entries(0.1), "confidence nan"),
])
def test_malformed_outputs_fail(got: object, want: list, message: str) -> None:
    result = compare(got, want, THRESHOLD)
    assert not result.ok and message in result.problems[0]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """As test.sh runs it: a plain interpreter on the file, no package import, no third-party modules."""
    return subprocess.run([sys.executable, "-I", str(REPO / "amf" / "compare.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_cli(tmp_path: Path) -> None:
    cpu, gpu = tmp_path / "cpu.json", tmp_path / "gpu.json"
    card = tmp_path / "model.json"
    card.write_text(json.dumps({"threshold": THRESHOLD}))
    cpu.write_text(json.dumps(entries(0.1, THRESHOLD + 0.0004, 0.9)))
    gpu.write_text(json.dumps(entries(0.1, THRESHOLD - 0.0001, 0.9)))
    ok = run_cli(gpu, cpu, "--card", card)
    assert ok.returncode == 0, ok.stderr
    assert "classes match on 2 compared pages (1 skipped within 0.02" in ok.stdout
    strict = run_cli(gpu, cpu, "--threshold", str(THRESHOLD), "--margin", "0")
    assert strict.returncode == 1 and "page 1: class 'normal'" in strict.stderr and "1 differ" in strict.stdout
    as_json = json.loads(run_cli(gpu, cpu, "--card", card, "--json").stdout)
    assert as_json["skipped_near_threshold"] == 1 and as_json["ok"] is True
    missing = run_cli(gpu, tmp_path / "nope.json", "--card", card)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_fixture_keeps_clear_of_the_threshold() -> None:
    """Every page of the committed fixture lies DEFAULT_MARGIN or more from the shipped model's threshold,
    so a GPU run of test.sh checks every class."""
    threshold = json.loads((REPO / "model" / "model.json").read_text())["threshold"]
    expected = json.loads((REPO / "test" / "expected_output.json").read_text())
    near = {i: round(abs(e["confidence"] - threshold), 4) for i, e in enumerate(expected)
            if abs(e["confidence"] - threshold) < DEFAULT_MARGIN}
    assert near == {}, f"pages within {DEFAULT_MARGIN} of threshold {threshold:.4f}: {near}"
