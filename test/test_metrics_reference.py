"""amf/metrics.py against independent references: scikit-learn and numpy called directly, or numbers
worked out by hand in the comments, never the module's own code.

What is checked: ROC AUC and the ROC curve with ties, a single case of a class, one class or no case
at all; the thresholding defaults and their inclusivity; the organizer's edge cases of the module
docstring (overall NaN plus ``organizer_errors``, per-domain ``zero_division`` 0.0 as scikit-learn's
``recall_score`` gives, numeric domain order, predictions that override the threshold per domain);
the length checks; the best threshold (optimal per scikit-learn, half-way between neighbouring
scores, nearest 0.5 among tied cuts, the everything-atypical cut, the one-class fallback); and the
calibration bins and ECE against ``np.histogram`` and scikit-learn's ``calibration_curve``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, recall_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from amf.metrics import (
    best_threshold,
    binary_metrics,
    domain_metrics,
    expected_calibration_error,
    reliability_bins,
    roc_auc,
    roc_curve,
)

# -- ROC AUC and the ROC curve -------------------------------------------------------------------

SMALL_CASES = {
    # one atypical case, tied with one normal case: pairs (0.3 vs 0.3) tie, (vs 0.8) loss, (vs 0.1) win
    "one positive, tied": ([0, 1, 0, 0], [0.3, 0.3, 0.8, 0.1], 1.5 / 3),
    # one normal case at 0.4, tied with an atypical one: 0.9 wins, 0.4 ties, 0.2 loses
    "one negative, tied": ([1, 1, 0, 1], [0.9, 0.4, 0.4, 0.2], 1.5 / 3),
    # every score the same: every pair a tie
    "all tied": ([1, 0, 1, 0, 0], [0.5] * 5, 0.5),
    # positives 0.9, 0.6, 0.6, 0.2 against negatives 0.6, 0.2, 0.1: 0.9 beats all 3 (3), each 0.6 beats 0.2
    # and 0.1 and ties 0.6 (2.5 each), 0.2 loses to 0.6, ties 0.2, beats 0.1 (1.5): 9.5 of 12 pairs
    "run of ties": ([1, 1, 0, 1, 0, 0, 1], [0.9, 0.6, 0.6, 0.6, 0.2, 0.1, 0.2], 9.5 / 12),
}


@pytest.mark.parametrize("name", list(SMALL_CASES))
def test_small_cases_match_scikit_learn_and_the_hand_count(name: str) -> None:
    y, s, hand = SMALL_CASES[name]
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(hand, abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert thr[0] == math.inf
    np.testing.assert_allclose(thr[1:], sk_thr[1:])


@pytest.mark.parametrize(("y", "s"), [([0, 0, 0], [0.1, 0.7, 0.2]), ([1, 1], [0.3, 0.9]), ([], [])])
def test_auc_with_one_class_or_none_is_nan_without_numpy_warnings(y: list[int], s: list[float]) -> None:
    """NaN is the documented answer (a domain without atypical cases is routine), not a 0/0 that numpy
    warns about on every such domain."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(roc_auc(y, s))


def test_one_class_curve_keeps_the_absent_rate_at_zero() -> None:
    # only normal cases, scores 0.9, 0.5, 0.5, 0.2: cuts at 0.9, 0.5, 0.2 take 1, 3, 4 of the 4 normal cases
    fpr, tpr, thr = roc_curve([0, 0, 0, 0], [0.9, 0.5, 0.5, 0.2])
    np.testing.assert_allclose(fpr, [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(tpr, [0, 0, 0, 0])
    np.testing.assert_allclose(thr, [math.inf, 0.9, 0.5, 0.2])
    # only atypical cases: the false-positive rate stays 0
    fpr, tpr, _ = roc_curve([1, 1], [0.7, 0.3])
    np.testing.assert_allclose(tpr, [0, 0.5, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0])


def test_empty_curve_is_the_lone_starting_point() -> None:
    fpr, tpr, thr = roc_curve([], [])
    assert fpr.tolist() == [0.0] and tpr.tolist() == [0.0] and thr.tolist() == [math.inf]


# -- thresholding and the per-case counts ------------------------------------------------------------

def test_default_threshold_is_one_half_and_inclusive() -> None:
    y, s = [1, 0, 1, 0, 1], [0.7, 0.2, 0.4, 0.5, 0.5]
    pred = [int(v >= 0.5) for v in s]  # [1, 0, 0, 1, 1]: 0.5 itself is atypical
    m = binary_metrics(y, s)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (tp, fn, fp, tn) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert domain_metrics(y, s)["overall"]["tp"] == 2 and domain_metrics(y, s)["threshold"] == 0.5


def test_counts_with_both_errors_equal() -> None:
    # tp = fn = 1 and tn = fp = 1: every rate is 1/2, and both classes are present, so nothing is flagged
    result = domain_metrics([1, 1, 0, 0], [0.9, 0.1, 0.9, 0.1])
    m = result["overall"]
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 1)
    assert m["sensitivity"] == m["specificity"] == m["balanced_accuracy"] == m["accuracy"] == 0.5
    assert result["organizer_errors"] == []


def test_binary_metrics_defaults_to_the_per_domain_zero_division() -> None:
    # no atypical case: scikit-learn's recall_score (the organizer's per-domain call) gives 0.0
    y, s = [0, 0], [0.7, 0.1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected = recall_score(y, [1, 0])
    m = binary_metrics(y, s)
    assert m["sensitivity"] == expected == 0.0
    assert m["balanced_accuracy"] == pytest.approx((0.0 + 0.5) / 2)


@pytest.mark.parametrize(("y", "s", "y_pred", "message"), [
    ([1, 0, 1], [0.5, 0.5], None, "3 labels but 2 scores and 2 predictions"),
    # one prediction would broadcast silently against three labels
    ([1, 0, 1], [0.5, 0.5, 0.5], [1], "3 labels but 3 scores and 1 predictions"),
    ([1, 0, 1], [0.5, 0.5], [1, 0, 1], "3 labels but 2 scores and 3 predictions"),
])
def test_length_mismatch_is_refused_with_the_lengths(y: list[int], s: list[float], y_pred: list[int] | None,
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        binary_metrics(y, s, y_pred=y_pred)


def test_domain_count_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 domains"):
        domain_metrics([1, 0, 1], [0.9, 0.1, 0.8], [1, 2])


# -- the organizer's edge cases, overall and per domain ----------------------------------------------

def test_a_single_atypical_case() -> None:
    result = domain_metrics([1], [0.9])
    m = result["overall"]
    assert m["sensitivity"] == 1.0 and math.isnan(m["specificity"]) and math.isnan(m["balanced_accuracy"])
    assert m["accuracy"] == 1.0 and math.isnan(m["roc_auc"])
    assert len(result["organizer_errors"]) == 1 and "no normal cases" in result["organizer_errors"][0]


def test_a_single_normal_case() -> None:
    result = domain_metrics([0], [0.9])
    m = result["overall"]
    assert math.isnan(m["sensitivity"]) and m["specificity"] == 0.0 and m["accuracy"] == 0.0
    assert len(result["organizer_errors"]) == 1 and "no atypical cases" in result["organizer_errors"][0]


def test_no_cases_at_all() -> None:
    result = domain_metrics([], [], [])
    m = result["overall"]
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and math.isnan(m["roc_auc"])
    assert len(result["organizer_errors"]) == 1 and "no cases at all" in result["organizer_errors"][0]
    assert result["per_domain"] == {}


def test_per_domain_specificity_without_normal_cases_is_zero_like_scikit_learn() -> None:
    # domain 7 has only atypical cases; domain 3 has one of each
    y, s, domains = [1, 1, 1, 0], [0.9, 0.2, 0.6, 0.1], [7, 7, 3, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        expected_spec = recall_score([1, 1], [1, 0], pos_label=0)
    d7 = domain_metrics(y, s, domains)["per_domain"]["7"]
    assert d7["specificity"] == expected_spec == 0.0
    assert d7["sensitivity"] == pytest.approx(recall_score([1, 1], [1, 0]))
    assert d7["balanced_accuracy"] == pytest.approx(0.25)  # (1/2 + 0) / 2: halved, as the organizer's is


def test_domain_without_atypical_cases_warns_nothing() -> None:
    """The per-domain zero sensitivity and NaN AUC are rules, not numpy accidents: no warning is raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = domain_metrics([1, 0, 0, 0], [0.9, 0.2, 0.8, 0.1], [1, 1, 2, 2])
    d2 = result["per_domain"]["2"]
    assert d2["sensitivity"] == 0.0 and math.isnan(d2["roc_auc"]) and d2["specificity"] == 0.5


def test_a_domain_is_its_value_however_it_is_spelled() -> None:
    """pandas reads a tumor code as 1 in one file and 1.0 in another; a groupby (the organizer's
    per-domain split) puts them together, and no page may fall out of every domain."""
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.4, 0.6, 0.8, 0.3])
    domains = [1, 1.0, np.int64(1), "1", 2.5, np.float64(2.5)]
    result = domain_metrics(y, s, domains)
    assert list(result["per_domain"]) == ["1", "2.5"]
    one, other = result["per_domain"]["1"], result["per_domain"]["2.5"]
    tn, fp, fn, tp = confusion_matrix(y[:4], s[:4] >= 0.5, labels=[0, 1]).ravel()
    assert (one["tp"], one["fn"], one["fp"], one["tn"]) == (tp, fn, fp, tn) == (1, 1, 1, 1)
    assert other["roc_auc"] == roc_auc_score(y[4:], s[4:])
    assert sum(m["tp"] + m["fn"] + m["fp"] + m["tn"] for m in result["per_domain"].values()) == len(y)


def test_predictions_override_the_threshold_in_every_domain() -> None:
    # the scores alone (at 0.5) would get every case right; the given predictions get some wrong
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    y_pred = np.array([0, 0, 1, 1, 1, 1])
    domains = ["b", "b", "a", "a", "a", "c"]
    result = domain_metrics(y, s, domains, threshold=0.5, y_pred=y_pred)
    for key, mask in [("overall", slice(None)), ("a", slice(2, 5)), ("b", slice(0, 2)), ("c", slice(5, 6))]:
        m = result["overall"] if key == "overall" else result["per_domain"][key]
        tn, fp, fn, tp = confusion_matrix(y[mask], y_pred[mask], labels=[0, 1]).ravel()
        assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (tp, fn, fp, tn), key
    assert list(result["per_domain"]) == ["a", "b", "c"]
    # the AUC still ranks the scores, which are perfect
    assert result["overall"]["roc_auc"] == roc_auc_score(y, s) == 1.0


# -- the best threshold ---------------------------------------------------------------------------------

def reference_cuts(s: np.ndarray) -> np.ndarray:
    """Half-way between neighbouring distinct scores, plus the lowest score (everything atypical)."""
    u = np.unique(s)
    return np.r_[(u[:-1] + u[1:]) / 2.0, u[:1]]


def reference_best(y: np.ndarray, s: np.ndarray) -> tuple[float, set[float]]:
    """The best balanced accuracy per scikit-learn over every cut, and the cuts reaching it."""
    ba = {float(c): balanced_accuracy_score(y, s >= c) for c in reference_cuts(s)}
    top = max(ba.values())
    return top, {c for c, v in ba.items() if math.isclose(v, top, rel_tol=1e-12)}


@pytest.mark.parametrize("seed", range(6))
def test_best_threshold_is_optimal_per_scikit_learn_and_nearest_one_half(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    s = np.round(rng.random(40) * 0.7 + 0.3 * y, 1)  # one decimal: many ties, often tied best cuts
    t = best_threshold(y, s)
    top, tied = reference_best(y, s)
    assert balanced_accuracy_score(y, s >= t) == pytest.approx(top, abs=1e-12)
    # no threshold whatsoever does better: the best point of scikit-learn's own ROC curve
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s)
    assert top == pytest.approx(float(np.max((sk_tpr + 1 - sk_fpr) / 2)), abs=1e-12)
    assert any(t == pytest.approx(c, abs=1e-12) for c in tied)
    assert abs(t - 0.5) == pytest.approx(min(abs(c - 0.5) for c in tied), abs=1e-12)


def test_of_two_tied_cuts_the_upper_one_wins_when_nearer_one_half() -> None:
    # descending: 0.7 atypical, 0.5 normal, 0.3 atypical, 0.1 normal. Cutting at 0.6 (tpr 1/2, fpr 0)
    # and at 0.2 (tpr 1, fpr 1/2) both give 0.75; 0.4 between them gives 0.5. 0.6 is nearer 0.5.
    y, s = np.array([1, 0, 1, 0]), np.array([0.7, 0.5, 0.3, 0.1])
    assert balanced_accuracy_score(y, s >= 0.6) == balanced_accuracy_score(y, s >= 0.2) == 0.75
    assert balanced_accuracy_score(y, s >= 0.4) == 0.5
    assert best_threshold(y, s) == pytest.approx(0.6)


def test_a_cut_better_by_a_hair_is_not_a_tie() -> None:
    """Balanced accuracies 0.9500025 (cut 0.2) and 0.95 (cut 0.65): numpy's default relative tolerance
    (1e-5) once called them equal and took 0.65, nearer one half; only float rounding is a tie."""
    y = np.r_[np.ones(900), np.zeros(5), np.ones(5), np.ones(95), np.zeros(996)].astype(int)
    s = np.r_[np.full(900, 0.9), np.full(5, 0.4), np.full(5, 0.3), np.full(1091, 0.1)]
    t = best_threshold(y, s)
    assert t == pytest.approx(0.2)
    assert balanced_accuracy_score(y, s >= t) > balanced_accuracy_score(y, s >= 0.65)


def test_when_nothing_separates_everything_is_atypical_at_the_lowest_score() -> None:
    # scores run against the labels: 0.9 and 0.5 normal, 0.1 atypical. Cut 0.7 gives (0 + 1/2) / 2,
    # cut 0.3 gives (0 + 0) / 2, the lowest score 0.1 gives (1 + 0) / 2 = 0.5: the best of the three.
    y, s = np.array([0, 0, 1]), np.array([0.9, 0.5, 0.1])
    assert [balanced_accuracy_score(y, s >= c) for c in (0.7, 0.3, 0.1)] == [0.25, 0.0, 0.5]
    assert best_threshold(y, s) == pytest.approx(0.1)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0, 0], []])
def test_best_threshold_falls_back_to_one_half_with_one_class(y: list[int]) -> None:
    assert best_threshold(y, [0.2, 0.4, 0.9][: len(y)]) == 0.5


# -- calibration: reliability bins and ECE ------------------------------------------------------------

def test_reliability_bins_match_numpy_histogram_and_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(500) ** 2  # skewed: some bins crowded, the top ones sparse
    y = (rng.random(500) < p).astype(int)
    r = reliability_bins(y, p)  # the default: 15 equal-width bins
    count, edges = np.histogram(p, bins=15, range=(0.0, 1.0))
    np.testing.assert_allclose(r["edges"], edges)
    np.testing.assert_array_equal(r["count"], count)
    filled = count > 0
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy="uniform")
    np.testing.assert_allclose(r["atypical_share"][filled], prob_true)
    np.testing.assert_allclose(r["mean_prob"][filled], prob_pred)
    ece = np.sum(count[filled] / count.sum() * np.abs(prob_true - prob_pred))
    assert expected_calibration_error(y, p) == pytest.approx(ece, abs=1e-12)


def test_reliability_bins_by_hand_with_the_top_edge() -> None:
    # 15 bins of width 1/15: 0.0 -> bin 0, 0.5 -> bin 7 (7.5), 0.99 -> bin 14 (14.85), 1.0 -> bin 14 (closed top)
    r = reliability_bins([0, 1, 1, 0], [0.0, 0.99, 1.0, 0.5])
    assert len(r["edges"]) == 16 and r["edges"][0] == 0.0 and r["edges"][-1] == 1.0
    np.testing.assert_allclose(np.diff(r["edges"]), 1 / 15)
    assert r["count"].tolist() == [1] + [0] * 6 + [1] + [0] * 6 + [2]
    assert r["mean_prob"][14] == pytest.approx(0.995) and r["atypical_share"][14] == 1.0
    assert r["mean_prob"][7] == 0.5 and r["atypical_share"][7] == 0.0
    assert np.isnan(r["mean_prob"][1]) and np.isnan(r["atypical_share"][1])  # empty bins
    # ECE: bin 0 gap 0, bin 7 gap 0.5 (1 case), bin 14 gap 0.005 (2 cases): (0.5 + 0.01) / 4
    assert expected_calibration_error([0, 1, 1, 0], [0.0, 0.99, 1.0, 0.5]) == pytest.approx(0.1275)


def test_ece_default_is_fifteen_bins_by_hand() -> None:
    # 0.45 and 0.48 fall in bins 6 (6.75) and 7 (7.2) of 15: gaps 0.55 and 0.48, ECE 0.515. In 16 bins
    # (7.2 and 7.68) they would share a bin: mean 0.465 against a share of 0.5, ECE 0.035.
    assert expected_calibration_error([1, 0], [0.45, 0.48]) == pytest.approx(0.515)
    assert expected_calibration_error([1, 0], [0.45, 0.48], bins=16) == pytest.approx(0.035)


def test_ece_without_cases_is_nan() -> None:
    assert math.isnan(expected_calibration_error([], []))
