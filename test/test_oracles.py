"""Independent oracles: answers from arithmetic, never from the code under test.

* ``process.py`` (a subprocess on a generated job) with the real architecture, random weights, and a
  head whose weights are zero: every page's logits are the head's bias, so P(atypical) is the
  softmax of the bias, i.e. sigmoid(b) for bias (0, b), and the class follows from the card's threshold.
  A confidence that were P(normal), a flipped or strict threshold comparison, or a class taken
  from the argmax instead of the threshold all fail here.
* The leaderboard's ``evaluate`` on a tiny hand-written pack, against numbers worked out by hand
  (and by scikit-learn directly): balanced accuracy, sensitivity, specificity, accuracy, ROC AUC,
  overall and per domain.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_model_dir, synthetic_pages, write_job

from amf.organizer import OUTPUT_FILENAME, validation_errors


def sigmoid(b: float) -> float:
    return 1.0 / (1.0 + math.exp(-b))


def oracle_model_dir(path: Path, bias: float, threshold: float) -> Path:
    """tf_efficientnet_lite0 + CBAM with random weights (make_model_dir), its head's weights zeroed and
    its bias set to (0, ``bias``): logits (0, bias) for every page, whatever the page."""
    import torch

    from amf.model_dir import load_model_dir, save_model_dir

    made = make_model_dir(path, threshold=threshold)
    loaded = load_model_dir(made)
    assert loaded.card["architecture"]["backbone"] == "tf_efficientnet_lite0"
    assert loaded.card["architecture"]["attention"] == "cbam"
    head = loaded.model.classifier
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, bias]))
    return save_model_dir(made, loaded.model, loaded.card)


def run_process(job: Path, out: Path, model: Path, *extra: str) -> list[dict]:
    cmd = [sys.executable, str(REPO / "process.py"), "--input", str(job), "--output", str(out), "--model", str(model),
           "--device", "cpu", "--quiet", *extra]
    env = {**os.environ, "AMF_BAKED_MODEL": str(out / "no-baked-model")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads((out / OUTPUT_FILENAME).read_text())


# bias, threshold, expected class, expected confidence (from arithmetic), extra process.py arguments
ORACLES = [
    pytest.param(10.0, 0.5, "atypical", sigmoid(10.0), (), id="bias+10"),
    pytest.param(-10.0, 0.5, "normal", sigmoid(-10.0), ("--tta", "dihedral4"), id="bias-10-dihedral4"),
    pytest.param(0.0, 0.5, "atypical", 0.5, (), id="bias0-at-threshold"),  # P = threshold: atypical (>=)
    # confident but below the card's threshold: the class comes from the threshold, not the argmax
    pytest.param(10.0, 0.99999, "normal", sigmoid(10.0), (), id="bias+10-high-threshold"),
]


@pytest.mark.parametrize(("bias", "threshold", "expected_class", "expected_confidence", "extra"), ORACLES)
def test_process_py_against_a_head_whose_answer_is_known(tmp_path: Path, bias: float, threshold: float,
                                                         expected_class: str, expected_confidence: float,
                                                         extra: tuple[str, ...]) -> None:
    model = oracle_model_dir(tmp_path / "model", bias, threshold)
    pages = synthetic_pages(5, size=140, seed=3)  # larger than the input: cropped, every page different
    write_job(tmp_path / "in", pages)
    entries = run_process(tmp_path / "in", tmp_path / "out", model, *extra)
    assert validation_errors(entries, len(pages)) == []
    assert [e["class"] for e in entries] == [expected_class] * len(pages)
    for e in entries:
        # fp32 softmax: within 1e-6 of the exact value; 0.5 exactly for equal logits
        assert e["confidence"] == pytest.approx(expected_confidence, abs=1e-6)
    if bias == 0.0:
        assert all(e["confidence"] == 0.5 for e in entries)


def test_the_oracle_confidences_are_what_the_arithmetic_says() -> None:
    """The numbers the oracles expect, restated: sigmoid(b) is softmax((0, b))[1], 1 - sigmoid(-b)."""
    assert sigmoid(10.0) == pytest.approx(math.exp(10) / (1 + math.exp(10)), rel=1e-15)
    assert sigmoid(10.0) == pytest.approx(0.9999546021312976, abs=1e-15)
    assert sigmoid(-10.0) == pytest.approx(1 - sigmoid(10.0), abs=1e-15)
    assert sigmoid(10.0) < 0.99999  # the high-threshold case really is below its threshold


# -- the leaderboard's metrics on a tiny pack, by hand ----------------------------------------------
# Three stacks, one tumour domain each. Classes are what the "algorithm" wrote (consistent with a
# threshold of 0.58, not 0.5: a normal page at 0.55), confidences are P(atypical).
TINY = {
    "stack_1.tiff": (1, [("atypical", "atypical", 0.9), ("atypical", "normal", 0.55), ("normal", "atypical", 0.6),
                         ("normal", "normal", 0.2), ("normal", "normal", 0.1)]),
    "stack_2.tiff": (2, [("atypical", "atypical", 0.8), ("normal", "normal", 0.3), ("normal", "atypical", 0.85),
                         ("atypical", "atypical", 0.95)]),
    "stack_3.tiff": (3, [("normal", "normal", 0.1), ("normal", "atypical", 0.8)]),  # no atypical case at all
}
F = Fraction
# Worked out by hand (comments: the counts and the (positive, negative) pairs won, ties counted half).
HAND = {
    # tp 3 (0.9, 0.8, 0.95), fn 1 (0.55), fp 3 (0.6, 0.85, 0.8), tn 4; AUC: 0.9 beats all 7 negatives,
    # 0.55 beats 0.2, 0.1, 0.3, 0.1 (4), 0.8 beats 0.6, 0.2, 0.1, 0.3, 0.1 and ties 0.8 (5.5), 0.95 all 7
    "overall": {"sensitivity": F(3, 4), "specificity": F(4, 7), "balanced_accuracy": (F(3, 4) + F(4, 7)) / 2,
                "accuracy": F(7, 11), "roc_auc": F(47, 2) / 28},
    # tp 1, fn 1, fp 1, tn 2; AUC: 0.9 beats 3, 0.55 beats 2 of 3 negatives
    "1": {"sensitivity": F(1, 2), "specificity": F(2, 3), "balanced_accuracy": F(7, 12), "accuracy": F(3, 5),
          "roc_auc": F(5, 6)},
    # tp 2, fn 0, fp 1, tn 1; AUC: 0.8 beats 0.3, loses to 0.85; 0.95 beats both
    "2": {"sensitivity": F(1), "specificity": F(1, 2), "balanced_accuracy": F(3, 4), "accuracy": F(3, 4),
          "roc_auc": F(3, 4)},
    # no atypical case: the organizer's recall_score gives sensitivity 0.0, which halves BA; AUC undefined
    "3": {"sensitivity": F(0), "specificity": F(1, 2), "balanced_accuracy": F(1, 4), "accuracy": F(1, 2),
          "roc_auc": None},
}


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """A pack and run folder in the organizer's layout, written by hand (no ``pack``, no ``run``)."""
    from leaderboard.layout import DOMAIN_NAMES_FILE, GROUND_TRUTH, inputs_json

    truth = []
    for image, (domain, pages) in TINY.items():
        truth.append({"image": image, "labels": [t for t, _, _ in pages], "tumordomains": [domain] * len(pages)})
        job = tmp_path / "jobs" / image.removesuffix(".tiff")
        (job / "input").mkdir(parents=True)
        (job / "input" / "inputs.json").write_text(json.dumps(inputs_json(image)))
        (job / "output").mkdir()
        (job / "output" / OUTPUT_FILENAME).write_text(
            json.dumps([{"class": c, "confidence": p} for _, c, p in pages]))
    (tmp_path / GROUND_TRUTH).write_text(json.dumps(truth))
    (tmp_path / DOMAIN_NAMES_FILE).write_text(json.dumps({"domains": {"1": "A", "2": "B", "3": "C"}}))
    return tmp_path


def flat(scope: str) -> tuple[list[int], list[int], list[float]]:
    rows = [r for _, (d, pages) in TINY.items() for r in pages if scope == "overall" or str(d) == scope]
    return ([int(t == "atypical") for t, _, _ in rows], [int(c == "atypical") for _, c, _ in rows],
            [p for _, _, p in rows])


@pytest.mark.parametrize("scope", list(HAND))
def test_the_hand_numbers_agree_with_scikit_learn(scope: str) -> None:
    """The hand-worked table, checked against scikit-learn called directly (the organizer's library)."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

    y, pred, score = flat(scope)
    hand = HAND[scope]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        sens, spec = recall_score(y, pred, zero_division=0.0), recall_score(y, pred, pos_label=0)
        auc = roc_auc_score(y, score) if len(set(y)) == 2 else None
    assert sens == pytest.approx(float(hand["sensitivity"]), abs=1e-12)
    assert spec == pytest.approx(float(hand["specificity"]), abs=1e-12)
    assert accuracy_score(y, pred) == pytest.approx(float(hand["accuracy"]), abs=1e-12)
    if len(set(y)) == 2:
        assert balanced_accuracy_score(y, pred) == pytest.approx(float(hand["balanced_accuracy"]), abs=1e-12)
        assert auc == pytest.approx(float(hand["roc_auc"]), abs=1e-12)
    else:
        assert hand["roc_auc"] is None


def test_evaluate_scores_the_tiny_pack_as_worked_out_by_hand(tiny_run: Path) -> None:
    from leaderboard import METRICS, evaluate

    report = evaluate(tiny_run, plots=False, log=lambda *a, **k: None)
    written = json.loads((tiny_run / METRICS).read_text())
    assert report["n_pages"] == 11 and report["n_jobs"] == 3
    for scope, hand in HAND.items():
        ours = report["overall"] if scope == "overall" else report["per_domain"][scope]
        agg = written["aggregates"]
        agg = {k.removeprefix("overall_"): v for k, v in agg.items() if k.startswith("overall_")} \
            if scope == "overall" else agg[f"domain_{scope}"]
        for key, value in hand.items():
            if value is None:
                assert math.isnan(ours[key]) and agg[key] is None, (scope, key)
            else:
                assert ours[key] == pytest.approx(float(value), abs=1e-12), (scope, key)
                assert agg[key] == pytest.approx(float(value), abs=1e-12), (scope, key)
    assert [report["per_domain"][d]["name"] for d in ("1", "2", "3")] == ["A", "B", "C"]
    assert (report["overall"]["tp"], report["overall"]["fn"], report["overall"]["fp"], report["overall"]["tn"]) \
        == (3, 1, 3, 4)


def test_the_ranking_score_is_the_confidence_whatever_the_class() -> None:
    """Reading a normal page's confidence as P(normal) (ranking by 1 - confidence) changes the AUC: the
    hand numbers above tell the two readings apart."""
    y, pred, score = flat("overall")
    other = [p if c else 1 - p for c, p in zip(pred, score, strict=True)]
    from sklearn.metrics import roc_auc_score

    assert abs(roc_auc_score(y, other) - float(HAND["overall"]["roc_auc"])) > 0.05
    assert np.isclose(roc_auc_score(y, score), float(HAND["overall"]["roc_auc"]))
