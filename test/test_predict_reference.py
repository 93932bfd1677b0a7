"""amf/predict.py against a numpy reference: a toy network whose logit is a fixed linear map of the
normalised page, so every probability can be worked out without the module's code (views by np.flip
and np.rot90, temperature, softmax, the mean over views and members, batching, the positive column)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from amf.errors import PredictionError
from amf.predict import Predictor, autocast_for, pick_device, predict_proba, predict_view_logits, tta_views

MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.25, 0.5)
SIDE = 6


class LinearLogit(nn.Module):
    """Logits (0, Σ w·x) per page; K such maps give K×N×2, as a MemberEnsemble does."""

    def __init__(self, weights: np.ndarray) -> None:  # (K×)3×H×W
        super().__init__()
        self.w = nn.Parameter(torch.from_numpy(weights).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.w if self.w.dim() == 4 else self.w[None]
        f = torch.einsum("nchw,kchw->kn", x.float(), w)
        logits = torch.stack([torch.zeros_like(f), f], dim=-1)
        return logits if self.w.dim() == 4 else logits[0]


def np_views(x: np.ndarray, tta: str) -> list[np.ndarray]:  # x: N×3×H×W; H is axis 2, W axis 3
    hflip = x[..., ::-1]
    rot = [np.rot90(v, 2, axes=(2, 3)) for v in (x, hflip)]
    quarter = [np.rot90(v, k, axes=(2, 3)) for v in (x, hflip) for k in (1, 3)]
    return {"none": [x], "flip2": [x, hflip], "dihedral4": [x, hflip, *rot],
            "dihedral8": [x, hflip, *rot, *quarter]}[tta]


def np_probability(pages: np.ndarray, w: np.ndarray, tta: str, temperature: float = 1.0,
                   positive: int = 1) -> np.ndarray:
    x = (pages.transpose(0, 3, 1, 2) / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    ws = w if w.ndim == 4 else w[None]
    probs = []
    for v in np_views(x, tta):
        for member in ws:
            f = np.einsum("nchw,chw->n", v, member) / temperature
            p_atypical = 1 / (1 + np.exp(-f))  # softmax over (0, f)
            probs.append(p_atypical if positive == 1 else 1 - p_atypical)
    return np.mean(probs, axis=0)


@pytest.fixture
def pages() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, SIDE, SIDE, 3), dtype=np.uint8)


@pytest.fixture
def weights() -> np.ndarray:
    return np.random.default_rng(1).normal(scale=0.05, size=(3, SIDE, SIDE))


@pytest.mark.parametrize("tta", ["none", "flip2", "dihedral4", "dihedral8"])
@pytest.mark.parametrize("batch_size", [256, 3])  # 3: batches of 3, 3 and 1 pages
def test_probabilities_match_the_reference(tta: str, batch_size: int, pages: np.ndarray, weights: np.ndarray) -> None:
    got = predict_proba(LinearLogit(weights), pages, mean=MEAN, std=STD, tta=tta, batch_size=batch_size, amp=False)
    assert got.dtype == np.float64 and got.shape == (7,)
    np.testing.assert_allclose(got, np_probability(pages, weights, tta), atol=1e-6)


def test_temperature_and_the_positive_column(pages: np.ndarray, weights: np.ndarray) -> None:
    model = LinearLogit(weights * 20)  # logits of several units, where the temperature shows
    cal = {"kind": "temperature", "temperature": 2.5}
    got = predict_proba(model, pages, mean=MEAN, std=STD, tta="flip2", amp=False, calibration=cal)
    np.testing.assert_allclose(got, np_probability(pages, weights * 20, "flip2", temperature=2.5), atol=1e-6)
    normal = predict_proba(model, pages, mean=MEAN, std=STD, amp=False, positive_index=0)
    np.testing.assert_allclose(normal, np_probability(pages, weights * 20, "none", positive=0), atol=1e-6)
    with pytest.raises(PredictionError, match="isotonic"):
        predict_proba(model, pages, mean=MEAN, std=STD, amp=False, calibration={"kind": "isotonic"})


@pytest.mark.parametrize("positive", [1, 0])
def test_platt_is_sigmoid_of_scale_times_margin_plus_bias(pages: np.ndarray, weights: np.ndarray,
                                                           positive: int) -> None:
    x = (pages.transpose(0, 3, 1, 2) / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    f = np.einsum("nchw,chw->n", x, weights * 20)  # logits (0, f): the margin of class 1 over class 0
    margin = f if positive == 1 else -f
    cal = {"kind": "platt", "scale": 0.4, "bias": -1.3}
    got = predict_proba(LinearLogit(weights * 20), pages, mean=MEAN, std=STD, amp=False, calibration=cal,
                        positive_index=positive)
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-(0.4 * margin - 1.3))), atol=1e-6)


def test_members_and_views_are_averaged_alike(pages: np.ndarray) -> None:
    members = np.random.default_rng(2).normal(scale=0.05, size=(3, 3, SIDE, SIDE))
    got = predict_proba(LinearLogit(members), pages, mean=MEAN, std=STD, tta="dihedral4", batch_size=4, amp=False)
    np.testing.assert_allclose(got, np_probability(pages, members, "dihedral4"), atol=1e-6)


@pytest.mark.parametrize("tta", ["none", "flip2", "dihedral4", "dihedral8"])
def test_view_logits_are_page_major_in_view_order(tta: str, pages: np.ndarray, weights: np.ndarray) -> None:
    got = predict_view_logits(LinearLogit(weights), pages, mean=MEAN, std=STD, tta=tta, batch_size=3, amp=False)
    x = (pages.transpose(0, 3, 1, 2) / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    expected = np.stack([np.einsum("nchw,chw->n", v, weights) for v in np_views(x, tta)], axis=1)  # N×V
    assert got.dtype == np.float32 and got.shape == (7, len(np_views(x, tta)), 2)
    np.testing.assert_allclose(got[..., 1], expected, atol=1e-5)
    assert np.all(got[..., 0] == 0)


def test_no_pages_give_empty_results_of_the_right_shape(weights: np.ndarray) -> None:
    empty = np.zeros((0, SIDE, SIDE, 3), np.uint8)
    probs = predict_proba(LinearLogit(weights), empty, mean=MEAN, std=STD, amp=False)
    assert probs.shape == (0,) and probs.dtype == np.float64
    assert predict_view_logits(LinearLogit(weights), empty, mean=MEAN, std=STD, tta="dihedral8").shape == (0, 8, 2)


def test_tta_views_are_the_dihedral_group_in_order() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    a = x.numpy()
    for tta, count in (("none", 1), ("flip2", 2), ("dihedral4", 4)):
        views = tta_views(x, tta)
        assert len(views) == count
        for v, ref in zip(views, np_views(a, tta), strict=True):
            np.testing.assert_array_equal(v.numpy(), ref)
    square = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)  # quarter turns need a square
    for v, ref in zip(tta_views(square, "dihedral8"), np_views(square.numpy(), "dihedral8"), strict=True):
        np.testing.assert_array_equal(v.numpy(), ref)
    assert len({tuple(v.flatten().tolist()) for v in tta_views(square, "dihedral8")}) == 8
    with pytest.raises(ValueError, match="dihedral16"):
        tta_views(x, "dihedral16")


def test_the_mixed_precision_policy() -> None:
    with warnings.catch_warnings():  # without a GPU torch turns CUDA autocast off, and says so
        warnings.simplefilter("ignore", UserWarning)
        cuda = autocast_for(torch.device("cuda"))
        off = autocast_for(torch.device("cuda"), enabled=False)
    assert cuda.device == "cuda" and cuda.fast_dtype == torch.float16  # fp16 on the GPU (the T4 lacks fast bf16)
    assert off.device != "cuda" or not off._enabled
    cpu = autocast_for(torch.device("cpu"))
    assert cpu.device == "cpu" and not cpu._enabled  # inference on the CPU is fp32
    bf16 = autocast_for(torch.device("cpu"), cpu_bf16=True)
    assert bf16._enabled and bf16.fast_dtype == torch.bfloat16


def test_pick_device_takes_the_request_or_what_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    assert pick_device(None) == torch.device("cuda")


def test_the_predictor_refuses_a_non_finite_probability(tmp_path: Path) -> None:
    from conftest import make_model_dir

    predictor = Predictor.from_dir(make_model_dir(tmp_path / "m"), device="cpu", tta="none")
    assert predictor.tta == "none" and predictor.engine.startswith(f"torch {torch.__version__} (cpu, ")
    assert predictor.engine.endswith(f"{torch.get_num_threads()} threads)")
    page = np.full((1, 128, 128, 3), 128, np.uint8)
    assert 0.0 < float(predictor.predict_proba(page)[0]) < 1.0
    with torch.no_grad():
        next(predictor.model.parameters()).fill_(float("nan"))
    with pytest.raises(PredictionError, match="non-finite"):
        predictor.predict_proba(page)


def test_mixed_precision_is_asked_for_by_default(pages: np.ndarray, weights: np.ndarray,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Both entry points ask for autocast unless told not to (it acts on CUDA only: fp16 on the T4)."""
    import contextlib

    import amf.predict as predict

    asked: list[bool] = []
    monkeypatch.setattr(predict, "autocast_for", lambda device, enabled=True: asked.append(enabled)
                        or contextlib.nullcontext())
    predict_proba(LinearLogit(weights), pages, mean=MEAN, std=STD)
    predict_view_logits(LinearLogit(weights), pages, mean=MEAN, std=STD)
    predict_proba(LinearLogit(weights), pages, mean=MEAN, std=STD, amp=False)
    assert asked == [True, True, False]


def test_the_predictor_takes_the_cards_tta_unless_told_otherwise(tmp_path: Path) -> None:
    from conftest import make_model_dir

    model_dir = make_model_dir(tmp_path / "m", tta="dihedral4")
    assert Predictor.from_dir(model_dir, device="cpu").tta == "dihedral4"
    assert Predictor.from_dir(model_dir, device="cpu", tta="flip2").tta == "flip2"
