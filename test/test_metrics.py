"""The one metric implementation against hand-computed cases, scikit-learn, and the organizer's edge cases."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from amf.metrics import (
    METRIC_NAMES,
    best_threshold,
    binary_metrics,
    domain_metrics,
    roc_auc,
    roc_curve,
    weak_label_metrics,
)
from amf.organizer import score_of, to_entries, validation_errors


def test_hand_computed_case() -> None:
    # predictions at 0.5: [1, 0, 1, 0, 0] -> tp 1, fn 1, fp 1, tn 2
    m = binary_metrics([1, 1, 0, 0, 0], [0.9, 0.4, 0.6, 0.2, 0.1], threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 2)
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # positive 0.9 beats all three negatives, 0.4 beats two of them: 5 of 6 pairs
    assert m["roc_auc"] == pytest.approx(5 / 6)


def test_ties_count_half_and_threshold_is_inclusive() -> None:
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # (positive, negative) pairs: tie, win, loss, win
    assert roc_auc([1, 0, 1, 0], [0.7, 0.7, 0.2, 0.1]) == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert binary_metrics([1], [0.5], threshold=0.5)["tp"] == 1


def test_y_pred_overrides_threshold() -> None:
    m = binary_metrics([1, 0], [0.9, 0.1], threshold=0.5, y_pred=[0, 1])
    assert (m["tp"], m["tn"]) == (0, 0)
    assert m["roc_auc"] == 1.0  # AUC ranks the scores, whatever the classes


@pytest.mark.parametrize("seed", range(5))
def test_against_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) * 0.6 + 0.4 * y, 2)  # rounded: plenty of ties
    t = 0.55
    pred = (s >= t).astype(int)
    m = binary_metrics(y, s, threshold=t)
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    fpr, tpr, thr = roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])


def test_domain_without_atypical_scores_zero_sensitivity_like_sklearn() -> None:
    # domain 2 has only normal cases: the organizer's recall_score gives 0.0, its ROC AUC NaN
    y = [1, 0, 0, 0, 0]
    s = [0.9, 0.2, 0.3, 0.8, 0.1]
    result = domain_metrics(y, s, [1, 1, 2, 2, 2], threshold=0.5)
    d2 = result["per_domain"]["2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        assert d2["sensitivity"] == recall_score([0, 0, 0], [0, 1, 0]) == 0.0
        assert math.isnan(roc_auc_score([0, 0, 0], [0.3, 0.8, 0.1]))
    assert d2["specificity"] == pytest.approx(2 / 3)
    assert d2["balanced_accuracy"] == pytest.approx(1 / 3)  # (0 + 2/3) / 2: the organizer halves it
    assert math.isnan(d2["roc_auc"])
    assert result["organizer_errors"] == []


def test_overall_without_a_class_is_nan_and_flagged() -> None:
    result = domain_metrics([0, 0, 0], [0.1, 0.7, 0.2], [1, 1, 1])
    overall = result["overall"]
    assert math.isnan(overall["sensitivity"]) and math.isnan(overall["balanced_accuracy"])
    assert overall["specificity"] == pytest.approx(2 / 3)
    assert len(result["organizer_errors"]) == 1 and "no atypical" in result["organizer_errors"][0]
    # per domain the organizer's scikit-learn calls give 0.0 instead
    assert result["per_domain"]["1"]["sensitivity"] == 0.0


def test_domains_in_numeric_order_and_all_metrics_present() -> None:
    result = domain_metrics([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.3], [10, 10, 2, 2])
    assert list(result["per_domain"]) == ["2", "10"]
    for m in (result["overall"], *result["per_domain"].values()):
        assert set(METRIC_NAMES) <= set(m)
    named = domain_metrics([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.3], ["b", "b", "a", "a"])
    assert list(named["per_domain"]) == ["a", "b"]


def test_best_threshold_separates_and_falls_back() -> None:
    t = best_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9])
    assert 0.3 < t <= 0.6
    assert best_threshold([0, 0], [0.2, 0.4]) == 0.5


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_entries_carry_p_atypical_whichever_class_wins(threshold: float) -> None:
    p = np.random.default_rng(0).random(50)
    entries = to_entries(p, threshold)
    assert validation_errors(entries, len(p)) == []
    for q, e in zip(p, entries, strict=True):
        assert e["class"] == ("atypical" if q >= threshold else "normal")
        assert e["confidence"] == q and type(e["confidence"]) is float
        assert score_of(e) == pytest.approx(q, abs=1e-12)


def _reasons(predictions: object, n: int | None = 2, strict: bool = False) -> str:
    return " | ".join(validation_errors(predictions, n, strict=strict))


@pytest.mark.parametrize(("predictions", "expected"), [
    ({"class": "normal", "confidence": 0.9}, "Needs list of dictionaries"),
    ("normal", "Needs list of dictionaries"),
    ([{"class": "normal", "confidence": 0.9}],
     "Results length does not match GT length. (result lengths=1, GT length=2)"),
    (["normal", {"class": "normal", "confidence": 0.9}],
     "entry 0: Output format is wrong. Needs list of dictionaries."),
    ([{"class": "normal"}, {"class": "normal", "confidence": 0.9}], 'with entries "class" and "confidence"'),
    ([{"confidence": 0.9}, {"class": "normal", "confidence": 0.9}], 'with entries "class" and "confidence"'),
    ([{"class": "Atypical", "confidence": 0.9}, {"class": "normal", "confidence": 0.9}],
     "Class needs to be either normal or atypical."),
    ([{"class": "AMF", "confidence": 0.9}, {"class": "normal", "confidence": 0.9}], "Class needs to be either"),
    ([{"class": "normal", "confidence": 1}, {"class": "normal", "confidence": 0.9}],
     "Confidence needs to be of type float. (got int 1)"),
    ([{"class": "normal", "confidence": "0.9"}, {"class": "normal", "confidence": 0.9}], "of type float"),
    ([{"class": "normal", "confidence": True}, {"class": "normal", "confidence": 0.9}], "of type float"),
    ([{"class": "normal", "confidence": None}, {"class": "normal", "confidence": 0.9}], "of type float"),
    ([{"class": "normal", "confidence": math.nan}, {"class": "normal", "confidence": 0.9}], "non-finite"),
    ([{"class": "normal", "confidence": math.inf}, {"class": "normal", "confidence": 0.9}], "non-finite"),
])
def test_every_kind_of_invalid_output_is_rejected(predictions: object, expected: str) -> None:
    assert expected in _reasons(predictions)


def test_json_parsed_outputs_follow_the_organizers_type_rules() -> None:
    # what a job's file parses to: 1 and 0 are ints (rejected), 1.0 is a float, NaN parses to a float
    assert _reasons(json.loads('[{"class": "atypical", "confidence": 1}]'), 1) != ""
    assert _reasons(json.loads('[{"class": "atypical", "confidence": 1.0}]'), 1) == ""
    assert "non-finite" in _reasons(json.loads('[{"class": "atypical", "confidence": NaN}]'), 1)


def test_range_is_checked_only_when_strict() -> None:
    out = [{"class": "atypical", "confidence": 1.5}]
    assert _reasons(out, 1, strict=False) == ""  # the organizer accepts it
    assert "not a probability" in _reasons(out, 1, strict=True)


def test_all_reasons_are_listed_not_just_the_first() -> None:
    out = [{"class": "x", "confidence": 1}, 3, {"class": "normal", "confidence": 0.5}]
    reasons = validation_errors(out, 2, strict=False)
    assert len(reasons) == 4  # length, class, type, not-a-dict


def test_best_threshold_is_optimal_when_ties_are_apart() -> None:
    # two separate cuts reach the best balanced accuracy (0.75); a cut between them is worse
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.7, 0.5, 0.1])
    t = best_threshold(y, s)
    from sklearn.metrics import balanced_accuracy_score

    assert balanced_accuracy_score(y, s >= t) == pytest.approx(0.75)
    assert t == pytest.approx(0.3)  # of the tied cuts 0.8 and 0.3, the one nearer 0.5


def test_weak_label_metrics_score_each_value_of_each_label_and_name_the_missing_unknown() -> None:
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.2, 0.4, 0.6, 0.8, 0.1])
    labels = {"Scanner": np.array(["XR", "XR", "", "", "S360", "S360"]), "Species": np.array(["human"] * 6)}
    out = weak_label_metrics(y, s, labels, threshold=0.5)
    assert list(out) == ["Scanner", "Species"] and list(out["Species"]) == ["human"]
    assert sorted(out["Scanner"]) == ["S360", "XR", "unknown"]  # the empty scanner is named, not dropped
    for value, mask in (("XR", [0, 1]), ("unknown", [2, 3]), ("S360", [4, 5])):
        assert out["Scanner"][value] == binary_metrics(y[mask], s[mask], 0.5, zero_division=0.0)
    assert out["Scanner"]["unknown"]["balanced_accuracy"] == 0.0  # both wrong at 0.5: the threshold is used
    assert out["Species"]["human"]["n"] == 6 and weak_label_metrics(y, s, {}, 0.5) == {}
