"""amf.stacks.read_stack: every page, in order, as H×W×3 uint8, from every layout we may be sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from conftest import synthetic_pages

from amf.errors import InputError
from amf.stacks import read_stack


def assert_pages(pages: list[np.ndarray], expected: np.ndarray) -> None:
    assert len(pages) == len(expected)
    for got, want in zip(pages, expected, strict=True):
        assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".TIFF"])
def test_one_series_contig(tmp_path: Path, suffix: str) -> None:
    pages = synthetic_pages(5)
    path = tmp_path / f"stack{suffix}"
    tifffile.imwrite(path, pages, photometric="rgb", compression="zlib")
    assert_pages(read_stack(path), pages)


def test_separate_pages_and_planar(tmp_path: Path) -> None:
    pages = synthetic_pages(3)
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in pages:  # one series per page, stored plane by plane
            tif.write(np.moveaxis(page, -1, 0), photometric="rgb", planarconfig="separate")
    assert_pages(read_stack(path), pages)


def test_imagej_stack(tmp_path: Path) -> None:
    pages = synthetic_pages(4)[..., 0]
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, pages, imagej=True)
    assert_pages(read_stack(path), np.repeat(pages[..., None], 3, axis=-1))


def test_gray_rgba_and_16_bit(tmp_path: Path) -> None:
    rgb = synthetic_pages(2)
    gray_path, rgba_path, deep_path = tmp_path / "gray.tif", tmp_path / "rgba.tif", tmp_path / "deep.tif"
    tifffile.imwrite(gray_path, rgb[..., 0])
    tifffile.imwrite(rgba_path, np.concatenate([rgb, np.full((2, 128, 128, 1), 255, np.uint8)], -1),
                     photometric="rgb", extrasamples=["unassalpha"])
    tifffile.imwrite(deep_path, rgb.astype(np.uint16) * 257, photometric="rgb")
    assert_pages(read_stack(gray_path), np.repeat(rgb[..., :1], 3, axis=-1))
    assert_pages(read_stack(rgba_path), rgb)
    assert_pages(read_stack(deep_path), rgb)


def test_odd_sizes_keep_their_shape(tmp_path: Path) -> None:
    path = tmp_path / "odd.tif"
    page = np.random.default_rng(1).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(page, photometric="rgb")
        tif.write(page[:50, :7], photometric="rgb")
    pages = read_stack(path)
    assert [p.shape for p in pages] == [(97, 131, 3), (50, 7, 3)]


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_metaimage_vector_volume(tmp_path: Path, suffix: str) -> None:
    pages = synthetic_pages(4)
    path = tmp_path / f"stack{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(pages, isVector=True), str(path))
    assert_pages(read_stack(path), pages)


def test_metaimage_gray_volume(tmp_path: Path) -> None:
    pages = synthetic_pages(3)[..., 1]
    path = tmp_path / "gray.mha"
    sitk.WriteImage(sitk.GetImageFromArray(pages), str(path))
    assert_pages(read_stack(path), np.repeat(pages[..., None], 3, axis=-1))


def test_format_sniffed_without_suffix(tmp_path: Path) -> None:
    pages = synthetic_pages(2)
    path = tmp_path / "stack.bin"
    tifffile.imwrite(path, pages, photometric="rgb")
    assert_pages(read_stack(path), pages)


def one_line(err: pytest.ExceptionInfo[InputError]) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        read_stack(tmp_path / "nope.tif")
    assert "does not exist" in one_line(err)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InputError) as err:
        read_stack(tmp_path / "empty.tif")
    assert "empty" in one_line(err)


@pytest.mark.parametrize("content", [b"II*\x00garbage-garbage", b"not an image", b"ObjectType = Image\nNDims = 3\n"])
@pytest.mark.parametrize("suffix", [".tif", ".mha"])
def test_corrupt_files(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_stack(path)
    assert path.name in one_line(err)


def test_truncated_tiff(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, synthetic_pages(4), photometric="rgb", compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError) as err:
        read_stack(path)
    one_line(err)


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "stack.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(InputError, match="unknown stack format"):
        read_stack(path)


def test_no_pages(tmp_path: Path) -> None:
    path = tmp_path / "thumb.tif"
    tifffile.imwrite(path, synthetic_pages(1)[0], photometric="rgb", subfiletype=1)  # reduced page only
    with pytest.raises(InputError, match="holds no pages"):
        read_stack(path)


def test_reader_noise_stays_out_of_the_log(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """ITK prints parse errors straight to stderr; they belong in the one error line instead."""
    path = tmp_path / "bad.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\n")
    with pytest.raises(InputError, match="DimSize"):
        read_stack(path)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
