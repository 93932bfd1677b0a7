"""training/align.py against references written from the papers in numpy, not from the module's own code.

Deep CORAL (Sun & Saenko 2016) with DomainBed's mean term; MMD² with DomainBed's seven Gaussian
bandwidths; the class-conditional and pairwise-over-domains rules of the module docstring.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from training.align import DomainAlignment, coral, mmd

DOMAINBED_GAMMAS = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]


def np_coral(a: np.ndarray, b: np.ndarray) -> float:
    mean_gap = np.mean((a.mean(0) - b.mean(0)) ** 2)
    cov_gap = np.mean((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2)  # unbiased, n - 1
    return float(mean_gap + cov_gap)


def np_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return np.mean([np.exp(-g * d2) for g in DOMAINBED_GAMMAS], axis=0)


def np_mmd(a: np.ndarray, b: np.ndarray) -> float:
    return float(np_kernel(a, a).mean() + np_kernel(b, b).mean() - 2 * np_kernel(a, b).mean())


def np_class_conditional(fn, a, b, ya, yb) -> float:
    terms = [fn(a[ya == c], b[yb == c]) for c in np.unique(np.concatenate([ya, yb]))
             if (ya == c).sum() >= 2 and (yb == c).sum() >= 2]
    return float(np.mean(terms)) if terms else 0.0


def np_centroid(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.mean(0) - b.mean(0)) ** 2).sum())


def np_standardize(e: np.ndarray) -> np.ndarray:
    return (e - e.mean(0)) / (e.std(0, ddof=1) + 1e-5)


def np_alignment(kind: str, emb: np.ndarray, y: np.ndarray, codes: dict[str, np.ndarray],
                 weights: dict[str, float], standardize: bool = True, min_per_domain: int = 2) -> float:
    e = np_standardize(emb) if standardize else emb
    total = 0.0
    for label, w in weights.items():
        c = codes[label]
        groups = [g for g in np.unique(c[c >= 0]) if (c == g).sum() >= min_per_domain]
        terms = []
        for i, j in itertools.combinations(groups, 2):
            a, b, ya, yb = e[c == i], e[c == j], y[c == i], y[c == j]
            if kind == "coral":
                terms.append(np_coral(a, b))
            else:
                terms.append(np_class_conditional(np_mmd if kind == "mmd" else np_centroid, a, b, ya, yb))
        total += w * (float(np.mean(terms)) if terms else 0.0)
    return total


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(24, 5))
    emb[8:16] = emb[8:16] * 1.7 + 0.4  # a second site, shifted and scaled
    emb[16:] = emb[16:] @ rng.normal(size=(5, 5)) * 0.3  # a third, mixed
    return emb, np.array([0, 1, 1, 0] * 6)


def test_coral_and_mmd_match_their_definitions(batch: tuple[np.ndarray, np.ndarray]) -> None:
    emb, _ = batch
    a, b = emb[:9], emb[9:20]  # unequal sizes: each covariance uses its own n - 1
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert float(coral(ta, tb)) == pytest.approx(np_coral(a, b), rel=1e-9)
    for scale in (1.0, 0.05, 0.002):  # at small distances the narrow bandwidths count too
        assert float(mmd(ta * scale, tb * scale)) == pytest.approx(np_mmd(a * scale, b * scale), rel=1e-9)


def test_one_sample_per_side_gives_a_finite_coral() -> None:
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    # a single sample has no spread: its covariance is zero rather than a division by zero
    mean_gap = np.mean((np.array([1.0, 2.0]) - np.array([1.0, 1.0])) ** 2)
    expected = mean_gap + np.mean(np.cov(b.numpy(), rowvar=False) ** 2)
    assert float(coral(a, b)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["coral", "mmd", "centroid"])
@pytest.mark.parametrize("standardize", [True, False])
def test_the_weighted_loss_over_labels_and_domain_pairs_matches_the_reference(
        kind: str, standardize: bool, batch: tuple[np.ndarray, np.ndarray]) -> None:
    emb, y = batch
    scanner = np.repeat([0, 1, 2], 8)
    scanner[[3, 12]] = -1  # unknown scanners sit out
    origin = np.array([0] * 12 + [1] * 11 + [2])  # origin 2 has one sample: below min_per_domain
    codes = {"Scanner": scanner, "Origin": origin}
    weights = {"Scanner": 0.7, "Origin": 2.5}
    align = DomainAlignment(kind, weights, normalize="standardize" if standardize else "none")
    total, parts = align(torch.from_numpy(emb), torch.from_numpy(y), {k: torch.from_numpy(v) for k, v in codes.items()})
    expected = np_alignment(kind, emb, y, codes, weights, standardize)
    assert float(total) == pytest.approx(expected, rel=1e-6)
    for label in weights:
        assert parts[label] == pytest.approx(np_alignment(kind, emb, y, codes, {label: 1.0}, standardize), rel=1e-6)


def test_class_conditional_losses_need_two_of_a_class_on_each_side() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(8, 3))
    codes = {"Scanner": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])}
    # class 0: exactly two a side, so it takes part; class 1: two on site 0 but one on site 1, so it
    # sits out; class 2 has one sample
    y = np.array([0, 0, 1, 1, 0, 0, 1, 2])
    align = DomainAlignment("centroid", {"Scanner": 1.0}, normalize="none")
    got = float(align(torch.from_numpy(emb), torch.from_numpy(y), codes)[0])
    assert got == pytest.approx(np_centroid(emb[[0, 1]], emb[[4, 5]]), rel=1e-6)
    # no class with two samples on both sides: zero, not NaN
    y_none = np.array([0, 1, 1, 1, 1, 0, 0, 0])
    assert float(align(torch.from_numpy(emb), torch.from_numpy(y_none), codes)[0]) == pytest.approx(
        np_class_conditional(np_centroid, emb[:4], emb[4:], y_none[:4], y_none[4:]), abs=1e-12)


def test_min_per_domain_defaults_to_two_and_is_honoured() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(7, 3))
    y = np.zeros(7, dtype=np.int64)
    codes = np.array([0, 0, 0, 1, 1, 2, 2])
    t = (torch.from_numpy(emb), torch.from_numpy(y), {"Scanner": torch.from_numpy(codes)})
    default = DomainAlignment("coral", {"Scanner": 1.0}, normalize="none")
    assert default.min_per_domain == 2
    assert float(default(*t)[0]) == pytest.approx(np_alignment("coral", emb, y, {"Scanner": codes}, {"Scanner": 1.0},
                                                               standardize=False), rel=1e-6)
    three = DomainAlignment("coral", {"Scanner": 1.0}, normalize="none", min_per_domain=3)
    assert float(three(*t)[0]) == 0.0  # only site 0 has three samples: no pair


def test_only_labels_with_two_known_values_are_active() -> None:
    align = DomainAlignment("coral", {"Scanner": 1.0, "Origin": 1.0, "Species": 1.0, "Tumor": 0.0})
    codes = {"Scanner": torch.tensor([0, 1, -1]), "Origin": torch.tensor([2, -1, -1]),
             "Species": torch.tensor([0, 0, 0]), "Tumor": torch.tensor([0, 1, 2])}
    assert align.active_labels(codes) == ["Scanner"]  # Tumor varies but weighs zero
    assert align.active_labels({"Origin": torch.tensor([0, 1])}) == ["Origin"]  # a label absent from codes is not


def test_a_label_weighing_zero_or_missing_from_the_batch_sits_out() -> None:
    """A weak label may weigh 0 or be absent from the data (the recipe drops single-valued ones):
    it is skipped, not looked up, and its loss is neither added nor reported."""
    rng = np.random.default_rng(3)
    emb, y = torch.from_numpy(rng.normal(size=(8, 3))), torch.zeros(8, dtype=torch.long)
    codes = {"Scanner": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), "Tumor": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    only = DomainAlignment("coral", {"Scanner": 1.0})(emb, y, {"Scanner": codes["Scanner"]})
    total, parts = DomainAlignment("coral", {"Scanner": 1.0, "Tumor": 0.0, "Species": 0.5})(emb, y, codes)
    assert list(parts) == ["Scanner"]
    assert float(total) == float(only[0]) and parts == only[1]


def test_two_samples_from_two_sites_are_standardised_too() -> None:
    emb = np.array([[1.0, 5.0], [3.0, -1.0]])
    align = DomainAlignment("coral", {"Scanner": 1.0}, min_per_domain=1)
    total, _ = align(torch.from_numpy(emb), torch.zeros(2, dtype=torch.long), {"Scanner": torch.tensor([0, 1])})
    z = np_standardize(emb)
    assert float(total) == pytest.approx(np.mean((z[0] - z[1]) ** 2), rel=1e-6)  # covariances of one sample: 0


def test_bad_settings_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="coral"):
        DomainAlignment("wasserstein")
    with pytest.raises(ValueError, match="standardize"):
        DomainAlignment("coral", normalize="l2")
    assert repr(DomainAlignment()) == "DomainAlignment(kind=coral, normalize=standardize, weights={})"
