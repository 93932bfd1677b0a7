"""benchmarks/latency.py's table: generated from the raw JSON alone; the targets' verdicts follow the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import latency


def raw(ort_cold: float = 2.0, ref_cold: float = 12.0, ort_none_ms: float = 25.0, ort_d4_ms: float = 100.0,
        members: int = 1, load: float = 1.5, card_tta: str = "dihedral4", baseline_cold: float | None = None) -> dict:
    def cold(label: str, wall: float) -> dict:
        return {"label": label, "command": f"python {label} --output $OUT", "wall_s": [wall, wall * 1.1, wall * 0.9],
                "cpu_s": [wall] * 3, "peak_rss_mib": [800.0, 810.0, 805.0], "warmup_wall_s": []}

    def warm(kind: str, threads: int, tta: str, ms: float) -> dict:
        return {"name": f"{kind}_t{threads}_{tta}", "engine": kind, "kind": kind, "threads": threads, "tta": tta,
                "views": latency.VIEW_COUNTS[tta], "ms": [ms, ms * 1.2, ms * 0.9], "cpu_ms": [ms] * 3}

    per_view = (("none", ort_none_ms), ("dihedral4", ort_d4_ms))
    warm_rows = {f"{k}_t{n}_{t}": warm(k, n, t, ms * (1.5 if k == "torch" else 1.0) * (1.2 if n == 1 else 1.0))
                 for k in ("onnx", "torch") for n in (2, 1) for t, ms in per_view}
    out = {
        "date": "2026-01-01T00:00:00+00:00", "commit": {"commit": "abc1234", "dirty": False},
        "machine": {"cpu": "Test CPU", "cpus": 2, "memory_gib": 8, "python": "3.11.7", "gpu": None},
        "load_average": {"start": [load, 1.0, 1.0], "end": [load, 1.0, 1.0]},
        "config": {"args": {"cold_runs": 3, "cold_warmup": 1, "warm_runs": 3, "warm_warmup": 1, "gap_ms": 20.0},
                   "model": "model", "card_tta": card_tta, "members": members, "n_pages": 16, "available_cpus": 2,
                   "torch": "2.x", "onnxruntime": "1.x", "nice": 10, "onnx_export_s": 4.0,
                   "onnx_export_check_gap": 1e-7, "shared_with": "a training run"},
        "cold": {"onnx": cold("onnx", ort_cold), "onnx_tta_none": cold("onnx none", ort_cold * 0.8),
                 "torch": cold("torch", 6.0), "reference": cold("reference", ref_cold)},
        "warm": warm_rows, "image_size": "not measured: no container engine on this machine",
    }
    if baseline_cold is not None:
        out["config"]["baseline"] = {"model": "/tmp/prev/model", "card_tta": "dihedral4", "members": 1,
                                     "weights_sha256": "72714af672d26f2c" + "0" * 48, "onnx_export_s": 3.0,
                                     "onnx_export_check_gap": 2e-7}
        out["cold"]["baseline"] = cold("baseline", baseline_cold)
    return out


@pytest.mark.parametrize(("ort_cold", "ref_cold", "met"), [(2.0, 12.0, True), (2.0, 9.0, False)])
def test_cold_target_is_five_times_the_reference(ort_cold: float, ref_cold: float, met: bool) -> None:
    cold = latency.targets(raw(ort_cold=ort_cold, ref_cold=ref_cold))[0]
    assert cold["met"] is met
    assert f"{ref_cold / ort_cold:.2f}×" in cold["measured"]


def test_warm_budgets_scale_with_members_and_views() -> None:
    one, shipped = latency.targets(raw(ort_none_ms=25.0, ort_d4_ms=130.0))[1:]
    assert one["budget"] == "≤ 30 ms" and one["met"]
    assert shipped["budget"] == "≤ 120 ms" and not shipped["met"]  # 1 member × 4 views × 30 ms
    one, shipped = latency.targets(raw(ort_none_ms=50.0, ort_d4_ms=130.0, members=2))[1:]
    assert one["budget"] == "≤ 60 ms" and one["met"]
    assert shipped["budget"] == "≤ 240 ms" and shipped["met"]


def test_table_only_regenerates_the_table_from_the_json(tmp_path: Path) -> None:
    src, out = tmp_path / "latency.json", tmp_path / "latency.md"
    src.write_text(json.dumps(raw(load=1.5)), encoding="utf-8")
    assert latency.main(["--table-only", "--json", str(src), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "**The machine was shared** with a training run" in text
    assert text.count("**MET**") + text.count("**NOT met**") == 3
    assert "6.00×" in text  # reference ÷ ONNX Runtime, cold
    src.write_text(json.dumps(raw(load=0.2)), encoding="utf-8")
    latency.main(["--table-only", "--json", str(src), "--out", str(out)])
    assert "was shared" not in out.read_text(encoding="utf-8")


def test_cold_ratio_is_the_model_time_over_the_baseline_time() -> None:
    assert latency.cold_ratio(2.4, 2.0) == pytest.approx(1.2)
    assert latency.cold_ratio(1.0, 4.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="positive"):
        latency.cold_ratio(1.0, 0.0)


@pytest.mark.parametrize(("model_cold", "baseline_cold", "ratio", "met"),
                         [(2.4, 2.0, "1.20×", "**MET**"), (3.2, 2.0, "1.60×", "**NOT met**")])
def test_baseline_comparison_is_rendered_with_its_ratio(model_cold: float, baseline_cold: float, ratio: str,
                                                         met: str) -> None:
    text = latency.render(raw(ort_cold=model_cold, members=5, card_tta="none", baseline_cold=baseline_cold))
    line = next(x for x in text.splitlines() if x.startswith("Cold 16-page job, ONNX Runtime as shipped:"))
    assert line.startswith(f"Cold 16-page job, ONNX Runtime as shipped: model (5 members, TTA none) {model_cold:.2f} s "
                           f"vs baseline (1 member, TTA dihedral4) {baseline_cold:.2f} s: {ratio} ")
    assert f"budget ≤ 1.5×: {met}" in line
    assert "`/tmp/prev/model`, weights sha256 72714af672d2…" in line
    # The baseline's job is a row of the cold table and its command is listed with the others.
    assert f"| baseline | {baseline_cold:.2f} s |" in text
    assert "`python baseline --output $OUT`" in text
    # ... and a row of the targets table (the README quotes the tables, not the line)
    row = next(t for t in latency.targets(raw(ort_cold=model_cold, members=5, card_tta="none",
                                              baseline_cold=baseline_cold)) if "the model it replaces" in t["what"])
    assert row["measured"].startswith(f"{ratio} ") and row["met"] is (met == "**MET**")


def test_no_baseline_no_comparison_line() -> None:
    data = raw()
    assert latency.baseline_line(data) is None
    text = latency.render(data)
    assert "Cold 16-page job, ONNX Runtime as shipped" not in text
    assert "baseline" not in text.replace("baseline_reference.py", "")


def test_baseline_model_must_be_a_model_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        latency.main(["--model", str(model), "--baseline-model", str(tmp_path / "none")])
    assert exit_.value.code == 2
    assert "--baseline-model" in capsys.readouterr().err
