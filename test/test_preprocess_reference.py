"""amf.preprocess checked against references that do not use its code.

What is checked, and against what:

* page conversion (:func:`to_rgb_uint8`): gray, gray + alpha, RGB and RGBA layouts, bool, 8-bit values in
  a 16-bit container, true 16-bit, signed, float in [0, 1] and float in 0..255, non-finite pixels, and the
  one-line errors for pages that are not 2-D images: hand-worked values, written out in the tests;
* fitting a page to the input size (:func:`fit_to_size`): centre crop and reflect/edge padding, against
  hand-worked arrays and an index reference written from the definition (reflect = mirror about the edge
  pixel, edge = repeat it);
* the optional centre crop (:func:`crop_and_upscale`): PIL called directly on the crop box worked out by hand;
* :func:`prepare_page` / :func:`prepare_pages`: defaults, empty and mixed lists;
* the dihedral TTA views (:func:`dihedral_views`): count and order, against the eight symmetries of a 2×2
  page written out by hand, index formulas, and torch.flip / torch.rot90 on NCHW (the torch engine's own
  :func:`amf.predict.tta_views` is held to these views in test_onnx_engine.py);
* normalisation (:func:`normalize`, :class:`ModelInput`): the published ImageNet mean/std, uint8 → [0, 1]
  scaling, NHWC → NCHW channel order, against numpy written from the definition and hand-worked values;
* the on-device resize (:func:`resize_batch`): bilinear with half-pixel centres in numpy when it grows, PIL's
  antialiased bilinear when it shrinks.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from amf.errors import InputError
from amf.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIEW_COUNTS,
    ModelInput,
    crop_and_upscale,
    dihedral_views,
    fit_to_size,
    normalize,
    prepare_page,
    prepare_pages,
    resize_batch,
    to_rgb_uint8,
)

# The ImageNet statistics as torchvision documents them (transforms.Normalize in every pretrained-model example)
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406])
TORCHVISION_STD = np.array([0.229, 0.224, 0.225])


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def gray3(values: np.ndarray) -> np.ndarray:
    """A gray page as RGB: the value in each of the three channels."""
    return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=2)


# -- to_rgb_uint8: layouts ---------------------------------------------------------------------------
def test_gray_pages_become_three_equal_channels() -> None:
    gray = np.array([[0, 7], [128, 255]], np.uint8)
    for page in (gray, gray[..., None]):  # H×W and H×W×1
        out = to_rgb_uint8(page)
        assert out.shape == (2, 2, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, gray3(gray))


def test_gray_with_alpha_keeps_the_gray_and_drops_the_alpha() -> None:
    page = np.stack([np.array([[10, 20], [30, 40]], np.uint8), np.full((2, 2), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_rgb_uint8(page), gray3([[10, 20], [30, 40]]))


def test_rgb_stays_and_rgba_loses_its_alpha() -> None:
    page = rgb(3, 5)
    np.testing.assert_array_equal(to_rgb_uint8(page), page)
    rgba = np.concatenate([page, np.full((3, 5, 1), 9, np.uint8)], axis=2)
    out = to_rgb_uint8(rgba)
    assert out.shape == (3, 5, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, page)


@pytest.mark.parametrize("shape", [(5,), (2, 4, 4, 3), (0, 5), (5, 0), (0, 5, 3), (5, 0, 3), (0, 0), (4, 5, 0)])
def test_pages_that_are_not_2d_images_are_refused_in_one_line(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError) as err:
        to_rgb_uint8(np.zeros(shape, np.uint8))
    # the shape as the caller gave it, and no page without a channel gets through
    assert str(err.value) == f"a page must be a 2-D image with at least one channel, got an array of shape {shape}"


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (1, 5, 3), (5, 1, 4)])
def test_one_pixel_wide_pages_are_pages(shape: tuple[int, ...]) -> None:
    page = np.full(shape, 77, np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(page), np.full((*shape[:2], 3), 77, np.uint8))


@pytest.mark.parametrize("page", [np.zeros((2, 2), np.complex128), np.array([["a", "b"]])])
def test_pixel_types_without_an_intensity_are_refused(page: np.ndarray) -> None:
    with pytest.raises(InputError, match=f"unsupported pixel type {page.dtype}"):
        to_rgb_uint8(page)


# -- to_rgb_uint8: pixel values ----------------------------------------------------------------------
def test_bool_pages_are_black_and_white() -> None:
    out = to_rgb_uint8(np.array([[True, False]]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, gray3([[255, 0]]))


def test_8_bit_values_in_a_wider_integer_container_are_kept() -> None:
    values = np.arange(256).reshape(16, 16)  # 0..255, the top exactly 255
    for dtype in (np.uint16, np.int32, np.int64):
        out = to_rgb_uint8(values.astype(dtype))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, gray3(values))


def test_true_16_bit_pages_are_scaled_by_255_over_65535() -> None:
    # an 8-bit value v stored as v * 257 comes back as v exactly (257 * 255 = 65535)
    ramp = np.arange(256, dtype=np.uint16) * 257
    np.testing.assert_array_equal(to_rgb_uint8(ramp.reshape(16, 16)), gray3(np.arange(256).reshape(16, 16)))
    # one value above 255 makes the whole page 16-bit: 256 -> 256 * 255 / 65535 = 0.996 -> 1, 255 -> 0.99 -> 1
    page = np.array([[0, 255, 256, 32896]], np.uint16)  # 32896 = 128 * 257 -> 128
    np.testing.assert_array_equal(to_rgb_uint8(page), gray3([[0, 1, 1, 128]]))
    # the smallest 16-bit page: brightest 256; 128 -> 0.498 -> 0
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0, 128, 256]], np.uint16)), gray3([[0, 0, 1]]))


def test_negative_integers_are_clipped_to_black() -> None:
    page = np.array([[-5, 0, 100, 255]], np.int16)
    np.testing.assert_array_equal(to_rgb_uint8(page), gray3([[0, 0, 100, 255]]))


def test_float_pages_in_0_1_are_scaled_by_255() -> None:
    # k / 255 for k = 0..255, the top exactly 1.0: the uint8 values come back
    values = np.arange(256).reshape(16, 16)
    for dtype in (np.float32, np.float64):
        out = to_rgb_uint8((values / 255).astype(dtype))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, gray3(values))


def test_float_pages_above_1_are_taken_as_0_to_255_and_saturate() -> None:
    page = np.array([[0.0, 2.0, 100.4, 254.6, 300.0, -3.0]])
    np.testing.assert_array_equal(to_rgb_uint8(page), gray3([[0, 2, 100, 255, 255, 0]]))
    # a dark 0..255 page whose brightest pixel is 2 is not mistaken for a [0, 1] page
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0.0, 1.2, 2.0]])), gray3([[0, 1, 2]]))


def test_non_finite_float_pixels_become_black() -> None:
    # NaN, +inf, -inf -> 0; the rest (max 0.2) is a [0, 1] page: 0.2 * 255 = 51
    page = np.array([[np.nan, np.inf, -np.inf, 0.2]])
    np.testing.assert_array_equal(to_rgb_uint8(page), gray3([[0, 0, 0, 51]]))
    # in a 0..255 page as well
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[np.nan, np.inf, -np.inf, 40.0]])), gray3([[0, 0, 0, 40]]))


# -- fit_to_size -------------------------------------------------------------------------------------
def reflect_index(i: int, n: int) -> int:
    """numpy's 'reflect' (scipy's 'mirror'): ... c b | a b c | b a ..., the edge pixel not repeated."""
    period = 2 * (n - 1)
    i = abs(i) % period
    return i if i < n else period - i


def fit_reference(page: np.ndarray, size: int) -> np.ndarray:
    """Written from the definition: the central size pixels of a long side (start (n - size) // 2), a short
    side padded with (size - n) // 2 before and the rest after, mirrored when every padded side is longer
    than its larger pad, else the edge pixel repeated."""
    h, w = page.shape[:2]
    pads = [((size - n) // 2, size - n - (size - n) // 2) if n < size else (0, 0) for n in (h, w)]
    mirror = all(n > max(p) for n, p in zip((min(h, size), min(w, size)), pads, strict=True) if max(p))

    def index(n: int, before: int) -> list[int]:
        if n >= size:
            return list(range((n - size) // 2, (n - size) // 2 + size))
        return [reflect_index(i - before, n) if mirror else min(max(i - before, 0), n - 1) for i in range(size)]

    rows, cols = index(h, pads[0][0]), index(w, pads[1][0])
    return page[np.ix_(rows, cols)]


def test_large_pages_are_centre_cropped_without_resampling() -> None:
    page = rgb(20, 21)
    out = fit_to_size(page, 16)
    # rows: (20 - 16) // 2 = 2 -> 2..17; columns: (21 - 16) // 2 = 2 -> 2..17
    np.testing.assert_array_equal(out, page[2:18, 2:18])
    page = rgb(25, 16)  # (25 - 16) // 2 = 4, only the rows are cut
    np.testing.assert_array_equal(fit_to_size(page, 16), page[4:20])
    page = rgb(16, 30)  # (30 - 16) // 2 = 7
    np.testing.assert_array_equal(fit_to_size(page, 16), page[:, 7:23])


def test_small_pages_are_mirrored_about_their_edge_pixel() -> None:
    # a column [10, 20, 30] to 7: pad 4 = 2 before + 2 after -> 30 20 | 10 20 30 | 20 10
    column = gray3([[10], [20], [30]])
    out = fit_to_size(np.repeat(column, 7, axis=1), 7)
    np.testing.assert_array_equal(out[:, 0, 0], [30, 20, 10, 20, 30, 20, 10])
    # a row [1, 2, 3, 4] to 9: pad 5 = 2 before + 3 after -> 3 2 | 1 2 3 4 | 3 2 1
    row = gray3([[1, 2, 3, 4]])
    out = fit_to_size(np.repeat(row, 9, axis=0), 9)
    np.testing.assert_array_equal(out[0, :, 0], [3, 2, 1, 2, 3, 4, 3, 2, 1])


def test_pages_too_small_to_mirror_repeat_their_edge_pixel() -> None:
    # [10, 20, 30] to 8: pad 5 = 2 + 3, and 3 pixels cannot mirror a pad of 3 -> 10 10 | 10 20 30 | 30 30 30
    column = np.repeat(gray3([[10], [20], [30]]), 8, axis=1)
    np.testing.assert_array_equal(fit_to_size(column, 8)[:, 0, 0], [10, 10, 10, 20, 30, 30, 30, 30])
    row = np.repeat(gray3([[10, 20, 30]]), 8, axis=0)
    np.testing.assert_array_equal(fit_to_size(row, 8)[0, :, 0], [10, 10, 10, 20, 30, 30, 30, 30])
    # one side too small switches both to edge: the 5 rows (pad 1 + 2) would mirror, the 2 columns cannot
    page = gray3(np.arange(10).reshape(5, 2))
    out = fit_to_size(page, 8)
    np.testing.assert_array_equal(out[:, :, 0], np.pad(np.arange(10).reshape(5, 2), ((1, 2), (3, 3)), mode="edge"))
    np.testing.assert_array_equal(fit_to_size(gray3([[42]]), 5), np.full((5, 5, 3), 42, np.uint8))


@pytest.mark.parametrize("shape", [(12, 16), (16, 11), (5, 7), (9, 3), (3, 9), (4, 4), (16, 16), (20, 9), (7, 23),
                                   (1, 16), (16, 1)])
def test_fit_to_size_matches_the_reference(shape: tuple[int, int]) -> None:
    page = rgb(*shape, seed=sum(shape))
    out = fit_to_size(page, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, fit_reference(page, 16))


# -- crop_and_upscale --------------------------------------------------------------------------------
def pil_centre_crop(patch: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(patch).crop(box).resize(patch.shape[:2][::-1], Image.Resampling.BILINEAR))


def test_centre_crop_is_the_middle_pixels_upscaled_bilinearly() -> None:
    patch = rgb(16, 16)
    out = crop_and_upscale(patch, 8)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pil_centre_crop(patch, (4, 4, 12, 12)))  # (16 - 8) // 2 = 4
    np.testing.assert_array_equal(crop_and_upscale(patch, 5), pil_centre_crop(patch, (5, 5, 10, 10)))  # 11 // 2
    np.testing.assert_array_equal(crop_and_upscale(patch, 14), pil_centre_crop(patch, (1, 1, 15, 15)))


def test_centre_crop_edge_values() -> None:
    patch = rgb(16, 16)
    assert crop_and_upscale(patch, 0) is patch  # off
    np.testing.assert_array_equal(crop_and_upscale(patch, 16), patch)  # the whole patch at its own size
    # one pixel: (16 - 1) // 2 = 7, the pixel at (7, 7) everywhere
    np.testing.assert_array_equal(crop_and_upscale(patch, 1), np.broadcast_to(patch[7, 7], (16, 16, 3)))


@pytest.mark.parametrize("crop", [17, -1])
def test_centre_crops_outside_the_patch_are_refused(crop: int) -> None:
    with pytest.raises(InputError) as err:
        crop_and_upscale(rgb(16, 16), crop)
    assert str(err.value) == f"center_crop {crop} must lie in 1..16 (the input size), or be 0 for off"


# -- prepare_page(s) ---------------------------------------------------------------------------------
def test_prepared_pages_default_to_no_centre_crop() -> None:
    page = rgb(16, 16)
    np.testing.assert_array_equal(prepare_page(page, 16), page)
    out = prepare_pages([page], 16)
    assert out.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(out[0], page)


def test_prepare_pages_of_mixed_kinds() -> None:
    big, small = rgb(20, 18, seed=1), rgb(10, 16, seed=2)
    gray16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    out = prepare_pages([big, small, gray16], 16)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], big[2:18, 1:17])
    np.testing.assert_array_equal(out[1], fit_reference(small, 16))
    np.testing.assert_array_equal(out[2], gray3(np.arange(256).reshape(16, 16)))
    # an N×H×W×3 stack is a list of pages too, and the centre crop applies to each
    stack = np.stack([rgb(16, 16, seed=s) for s in range(3)])
    cropped = prepare_pages(stack, 16, center_crop=8)
    for page, got in zip(stack, cropped, strict=True):
        np.testing.assert_array_equal(got, pil_centre_crop(page, (4, 4, 12, 12)))


def test_no_pages_is_an_empty_batch_of_the_right_shape() -> None:
    for empty in ([], np.zeros((0, 7, 7, 3), np.uint8)):
        out = prepare_pages(empty, 16)
        assert out.shape == (0, 16, 16, 3) and out.dtype == np.uint8


# -- dihedral_views ----------------------------------------------------------------------------------
def test_view_counts() -> None:
    assert VIEW_COUNTS == {"none": 1, "flip2": 2, "dihedral4": 4, "dihedral8": 8}


def test_the_eight_views_of_a_2x2_page_in_order() -> None:
    a, b, c, d = 1, 2, 3, 4
    page = gray3([[a, b], [c, d]])[None]
    expected = [
        [[a, b], [c, d]],  # as is
        [[b, a], [d, c]],  # flipped left-right
        [[d, c], [b, a]],  # turned 180°
        [[c, d], [a, b]],  # flipped, then turned 180° (= flipped top-bottom)
        [[b, d], [a, c]],  # a quarter turn counter-clockwise
        [[c, a], [d, b]],  # three quarter turns counter-clockwise (a quarter clockwise)
        [[a, c], [b, d]],  # flipped, then a quarter turn counter-clockwise (= transposed)
        [[d, b], [c, a]],  # flipped, then three quarter turns (= the anti-transpose)
    ]
    for tta, count in (("none", 1), ("flip2", 2), ("dihedral4", 4), ("dihedral8", 8)):
        views = dihedral_views(page, tta)
        assert views.shape == (count, 2, 2, 3) and views.dtype == np.uint8
        np.testing.assert_array_equal(views[..., 0], np.array(expected[:count]))


def test_views_are_view_major_and_match_torch_s_flips_and_turns() -> None:
    pages = np.stack([rgb(5, 5, seed=s) for s in range(3)])
    n = 4
    ij = np.indices((n + 1, n + 1))
    i, j = ij[0], ij[1]
    # out[i, j] = page[rows[i, j], cols[i, j]] for each view, in the documented order
    maps = [(i, j), (i, n - j), (n - i, n - j), (n - i, j), (j, n - i), (n - j, i), (j, i), (n - j, n - i)]
    views = dihedral_views(pages, "dihedral8")
    assert views.shape == (8 * 3, 5, 5, 3) and views.flags.c_contiguous
    for v, (rows, cols) in enumerate(maps):
        for k, page in enumerate(pages):
            np.testing.assert_array_equal(views[v * 3 + k], page[rows, cols], err_msg=f"view {v}, page {k}")
    # the same order from torch.flip / torch.rot90 on the NCHW batch the torch engine turns on the device
    x = torch.from_numpy(pages).permute(0, 3, 1, 2)
    flips = [x, x.flip(3)]
    turned = flips + [torch.rot90(v, 2, dims=(2, 3)) for v in flips]
    turned += [torch.rot90(v, k, dims=(2, 3)) for v in flips for k in (1, 3)]
    torch_views = torch.cat(turned).permute(0, 2, 3, 1).numpy()
    for tta, count in VIEW_COUNTS.items():
        np.testing.assert_array_equal(dihedral_views(pages, tta), torch_views[: count * 3], err_msg=tta)


def test_unknown_tta_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown TTA setting 'dihedral16'"):
        dihedral_views(np.zeros((1, 2, 2, 3), np.uint8), "dihedral16")


# -- normalize / ModelInput --------------------------------------------------------------------------
def test_the_imagenet_statistics_are_the_published_ones() -> None:
    np.testing.assert_array_equal(IMAGENET_MEAN, TORCHVISION_MEAN)
    np.testing.assert_array_equal(IMAGENET_STD, TORCHVISION_STD)


def test_black_and_white_pixels_hand_worked() -> None:
    # black: -mean / std; white: (1 - mean) / std, per channel R, G, B
    black = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]  # -2.1179, -2.0357, -1.8044
    white = [0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225]  # 2.2489, 2.4286, 2.64
    batch = torch.from_numpy(np.stack([np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)]))
    out = normalize(batch)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), black, rtol=1e-6)
    np.testing.assert_allclose(out[1, :, 0, 0].numpy(), white, rtol=1e-6)
    assert math.isclose(white[2], 2.64) and math.isclose(black[0], -2.117903930131004)


def normalize_reference(nhwc: np.ndarray, mean: np.ndarray = TORCHVISION_MEAN,
                        std: np.ndarray = TORCHVISION_STD) -> np.ndarray:
    """uint8 N×H×W×3 -> float N×3×H×W: channel c of pixel (h, w) is (value / 255 - mean[c]) / std[c]."""
    x = nhwc.astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    return (x - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)


def test_normalize_puts_channels_first_in_rgb_order() -> None:
    batch = np.stack([rgb(3, 5, seed=s) for s in range(2)])  # not square: a wrong permute shows
    batch[0, 0, 0] = (0, 128, 255)
    out = normalize(torch.from_numpy(batch))
    assert out.shape == (2, 3, 3, 5) and out.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(out.numpy(), normalize_reference(batch), rtol=1e-5, atol=1e-6)
    # pixel (0, 0) of page 0: R = 0, G = 128, B = 255
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [-0.485 / 0.229, (128 / 255 - 0.456) / 0.224, 0.594 / 0.225],
                               rtol=1e-6)


def test_float_nchw_input_is_taken_as_0_1_and_agrees_with_uint8() -> None:
    batch = np.stack([rgb(4, 6, seed=s) for s in range(2)])
    as_float = torch.from_numpy(batch).permute(0, 3, 1, 2).double() / 255  # float64 in [0, 1], NCHW
    out = normalize(as_float)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), normalize_reference(batch), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, normalize(torch.from_numpy(batch)), atol=1e-6, rtol=0)


def test_a_backbone_s_own_statistics_are_used() -> None:
    batch = np.stack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)])
    half = (0.5, 0.5, 0.5)
    out = normalize(torch.from_numpy(batch), mean=half, std=half)  # [0, 1] -> [-1, 1]
    np.testing.assert_allclose(out.numpy(), np.stack([np.full((3, 2, 2), -1.0), np.ones((3, 2, 2))]), rtol=1e-6)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    model_input = ModelInput(mean=mean, std=std)
    np.testing.assert_allclose(model_input(torch.from_numpy(batch)).numpy(),
                               normalize_reference(batch, np.array(mean), np.array(std)), rtol=1e-5, atol=1e-6)
    assert model_input.kwargs() == {"mean": mean, "std": std, "resize_to": None}


def test_model_input_is_an_immutable_value() -> None:
    spec = ModelInput(resize_to=224)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.resize_to = 96  # type: ignore[misc]
    assert hash(spec) == hash(ModelInput(resize_to=224)) and {spec: 1}[ModelInput(resize_to=224)] == 1


# -- resize_batch ------------------------------------------------------------------------------------
def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear weights with half-pixel centres (align_corners=False): output pixel d samples the input at
    (d + 0.5) · n_in / n_out - 0.5, clamped into the image."""
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = min(max((d + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        i0 = math.floor(src)
        i1 = min(i0 + 1, n_in - 1)
        m[d, i0] += 1 - (src - i0)
        m[d, i1] += src - i0
    return m


def test_growing_is_plain_bilinear_with_half_pixel_centres() -> None:
    x = np.random.default_rng(3).random((2, 3, 5, 7)).astype(np.float32)
    out = resize_batch(torch.from_numpy(x), 12)
    assert out.shape == (2, 3, 12, 12) and out.is_contiguous(memory_format=torch.channels_last)
    want = bilinear_matrix(5, 12) @ x.astype(np.float64) @ bilinear_matrix(7, 12).T
    np.testing.assert_allclose(out.numpy(), want, atol=1e-5)
    # hand-worked: [0, 1] doubled -> samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
    two = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).expand(1, 3, 2, 2)
    np.testing.assert_allclose(resize_batch(two, 4)[0, 0, 0].numpy(), [0.0, 0.25, 0.75, 1.0], atol=1e-6)


def test_shrinking_is_antialiased_like_pil() -> None:
    x = np.random.default_rng(4).random((1, 3, 24, 20)).astype(np.float32)
    out = resize_batch(torch.from_numpy(x), 8)
    want = np.stack([np.asarray(Image.fromarray(c).resize((8, 8), Image.Resampling.BILINEAR)) for c in x[0]])
    np.testing.assert_allclose(out[0].numpy(), want, atol=1e-5)


def test_resize_at_its_own_size_does_nothing() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert resize_batch(x, 16) is x


def test_normalize_resizes_the_normalised_batch() -> None:
    batch = np.stack([rgb(6, 6, seed=s) for s in range(2)])
    out = normalize(torch.from_numpy(batch), resize_to=9)
    assert out.shape == (2, 3, 9, 9) and out.is_contiguous(memory_format=torch.channels_last)
    m = bilinear_matrix(6, 9)
    np.testing.assert_allclose(out.numpy(), m @ normalize_reference(batch) @ m.T, atol=1e-5)
    np.testing.assert_allclose(ModelInput(resize_to=9)(torch.from_numpy(batch)).numpy(), out.numpy())
