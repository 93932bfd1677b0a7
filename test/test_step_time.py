"""benchmarks/step_time.py: the studies' step time, paired on one machine, and the table that quotes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.step_time import main, measure, summary
from benchmarks.studies import STUDIES, write_table


def test_variants_take_turns_in_reversed_order_every_other_round_after_untimed_warmup() -> None:
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = measure(steps, rounds=3, steps=2, warmup=1)
    forward, backward = ["a", "a", "b", "b", "c", "c"], ["c", "c", "b", "b", "a", "a"]
    assert calls == [*"abc", *forward, *backward, *forward]
    assert {name: len(t) for name, t in times.items()} == {"a": 6, "b": 6, "c": 6}  # warm-up steps are not timed


def test_the_step_against_the_reference_is_the_median_of_paired_round_ratios() -> None:
    times = {"ref": [1.0, 2.0, 3.0], "big": [3.0, 4.0, 100.0]}
    s = summary(times, batch_size=64, steps=3)  # one round of three steps: medians 2 and 4
    assert s["ref"] == {"step_seconds_median": 2.0, "images_per_s": 32.0, "step_vs_reference": 1.0,
                        "step_vs_reference_range": [1.0, 1.0]}
    assert s["big"]["step_vs_reference"] == 2.0 and s["big"]["images_per_s"] == 16.0  # medians: an outlier is ignored
    s = summary(times, batch_size=64, steps=1)  # three rounds of one step: ratios 3, 2 and 33.3
    assert s["big"]["step_vs_reference"] == 3.0 and s["big"]["step_vs_reference_range"] == [2.0, 100.0 / 3.0]


def logged_run(slug: str, seconds: float) -> dict:
    """A study's raw result whose own log timed its step at ``seconds``."""
    return {"variant_slug": slug, "speed": {"step_seconds_median": seconds, "images_per_s_median": 64 / seconds},
            "student": {"val": {"roc_auc": 0.84, "balanced_accuracy": 0.78}}, "code": {"commit": "abc", "dirty": False},
            "machine": {"cpu": "X", "cpus": 2, "gpu": None},
            "config": {"optim": {"epochs": 15, "sampler": "shuffle", "loss": "weighted_ce"},
                       "model": {"backbone": "tf_efficientnet_lite0"}}}


def test_study_table_takes_its_speed_from_the_paired_measurement_when_there_is_one(tmp_path: Path) -> None:
    results = tmp_path / "studies"
    results.mkdir()
    ref, lite2 = STUDIES["backbone"]
    # the runs' own logs say the bigger network is faster: on another day, beside other work
    for slug, seconds in (("default", 2.2), ("model-backbone-tf-efficientnet-lite2", 1.3)):
        (results / f"{slug}-s0.json").write_text(json.dumps(logged_run(slug, seconds)))
    _, logged = write_table("backbone", results)
    assert "from each run's own log" in logged and "| 2.200¹ | 29.091¹ | – |" in logged
    paired = {"machine_text": "Y, 2 cores", "date": "2026-12-07T07:00:00Z", "batch_size": 64, "threads": 2, "rounds": 6,
              "summary": {ref: {"step_seconds_median": 1.0, "images_per_s": 64.0, "step_vs_reference": 1.0},
                          lite2: {"step_seconds_median": 1.9, "images_per_s": 33.7, "step_vs_reference": 1.9,
                                  "step_vs_reference_range": [1.8, 2.0]}}}
    (tmp_path / "backbone_step_time.json").write_text(json.dumps(paired))
    _, text = write_table("backbone", results)
    assert "paired on one machine by `python -m benchmarks.step_time backbone`" in text and "Y, 2 cores" in text
    assert f"| {lite2} | 1 | 0.840¹ | 0.780¹ | 1.900 | 33.7 | 1.90× (1.80–2.00) |" in text
    assert f"| {ref} | 1 | 0.840¹ | 0.780¹ | 1.000 | 64.0 | 1.00× |" in text


def test_a_study_whose_variants_run_the_same_step_shows_no_logged_times(tmp_path: Path) -> None:
    results = tmp_path / "studies"
    results.mkdir()
    for slug, seconds in (("default", 2.2), ("augment-hed-sigma-0-2", 1.1)):  # two days, two loads
        (results / f"{slug}-s0.json").write_text(json.dumps(logged_run(slug, seconds)))
    _, text = write_table("stain", results)
    assert "the same for every variant by construction" in text and "2.200" not in text and "1.100" not in text
    assert text.count("| – | – | 1× by construction |") == len(STUDIES["stain"])


def test_the_command_measures_a_study_and_writes_its_raw_record(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crop_step_time.json"
    assert main(["crop", "--rounds", "1", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--out", str(out)]) == 0
    raw = json.loads(out.read_text())
    assert raw["study"] == "crop" and raw["batch_size"] == 4 and raw["input_size"] == 128
    assert list(raw["summary"]) == list(STUDIES["crop"]) and raw["code"]["commit"] and raw["machine"]["cpus"] >= 1
    assert all(len(t) == 1 and t[0] > 0 for t in raw["step_seconds"].values())
    assert raw["summary"][next(iter(STUDIES["crop"]))]["step_vs_reference"] == 1.0
    assert all(len(s["step_vs_reference_range"]) == 2 for s in raw["summary"].values())
    assert "× the reference" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["crop", "--rounds", "0"])
    assert bad.value.code == 2 and "--rounds and --steps must be at least 1" in capsys.readouterr().err
