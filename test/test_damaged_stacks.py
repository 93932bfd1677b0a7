"""Damaged stacks: the reader process.py uses returns every page or refuses with one InputError line.

A few hundred damaged variants of small valid TIFF and MetaImage stacks (a seeded loop): cut at
many offsets, single bytes flipped in the header and in the pixel data, a wrong DimSize. For each
one, read_stack either returns the right number of pages of the right shape, or raises the one-line
InputError naming the file. Never another exception, never a hang, never fewer pages.

Damage to pixel data alone comes back as pages of the right count and shape with wrong pixels:
uncompressed TIFF and MetaImage data carry no checksum, so no reader can tell (a flip in zlib data
is usually caught by its decoder). That is accepted here, as it must be.

One case is out of reach and stays so: a flip that turns a next-IFD offset into 0 (or into the
offset of a later IFD) ends the chain cleanly, and what is left is a valid, shorter TIFF. The corpus
accepts the shorter chain's pages for exactly that case, and test_chain_ended_cleanly_is_out_of_reach
pins the behaviour down.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from conftest import REPO, SAMPLE_DIR, synthetic_pages, write_job

from amf.errors import InputError
from amf.organizer import OUTPUT_FILENAME
from amf.stacks import read_stack

N_PAGES, SIZE = 5, 32
PAGES = synthetic_pages(N_PAGES, size=SIZE, seed=7)
SLOW = 5.0  # seconds; a single small variant taking longer is treated as a hang


# -- the valid stacks ----------------------------------------------------------------------------

def _tif_plain(path: Path) -> None:
    tifffile.imwrite(path, PAGES, photometric="rgb")  # uncompressed, one IFD per page


def _tif_zlib_strips(path: Path) -> None:
    tifffile.imwrite(path, PAGES, photometric="rgb", compression="zlib", rowsperstrip=8)


def _tif_bigtiff_tiles(path: Path) -> None:
    tifffile.imwrite(path, PAGES, photometric="rgb", bigtiff=True, tile=(16, 16), compression="zlib")


def _tif_pages_planar(path: Path) -> None:
    with tifffile.TiffWriter(path) as tif:  # one series per page, planes stored separately
        for page in PAGES:
            tif.write(np.moveaxis(page, -1, 0), photometric="rgb", planarconfig="separate")


def _tif_imagej(path: Path) -> None:
    tifffile.imwrite(path, PAGES[..., 0], imagej=True)


def _mha(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(PAGES, isVector=True), str(path))


def _mha_zlib(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(PAGES, isVector=True), str(path), True)


def _mhd(path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(PAGES, isVector=True), str(path))


SOURCES = {
    "plain.tif": _tif_plain,
    "zlib-strips.tif": _tif_zlib_strips,
    "bigtiff-tiles.tif": _tif_bigtiff_tiles,
    "pages-planar.tif": _tif_pages_planar,
    "imagej.tif": _tif_imagej,
    "stack.mha": _mha,
    "zlib.mha": _mha_zlib,
    "stack.mhd": _mhd,
}


# -- where the header and the data of each file lie ------------------------------------------------

def _ifd_chain(data: bytes) -> tuple[list[int], list[tuple[int, int]]]:
    """IFD offsets of a valid TIFF and the byte range of each next-IFD offset field."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    count_fmt, tag_size, off_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, off_size = struct.calcsize(count_fmt), struct.calcsize(off_fmt)
    offset = struct.unpack(order + off_fmt, data[8:16] if big else data[4:8])[0]
    chain, fields = [], []
    while offset:
        n = struct.unpack_from(order + count_fmt, data, offset)[0]
        field = offset + count_size + n * tag_size
        chain.append(offset)
        fields.append((field, field + off_size))
        offset = struct.unpack_from(order + off_fmt, data, field)[0]
    return chain, fields


def _tiff_data_ranges(path: Path) -> list[tuple[int, int]]:
    with tifffile.TiffFile(path) as tif:
        return [(o, o + n) for page in tif.pages
                for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]


def _shorter_chain(original: bytes, damaged: bytes, position: int) -> int | None:
    """Pages of the valid shorter TIFF a flip in a next-IFD field leaves, or None if it did not."""
    chain, fields = _ifd_chain(original)
    order = "<" if original[:2] == b"II" else ">"
    for i, (start, end) in enumerate(fields):
        if start <= position < end:
            value = int.from_bytes(damaged[start:end], "little" if order == "<" else "big")
            if value == 0:
                return i + 1
            if value in chain[i + 1:]:
                return i + 1 + len(chain) - chain.index(value)
    return None


# -- the corpus ----------------------------------------------------------------------------------

def _variants(name: str, path: Path, rng: np.random.Generator) -> list[tuple[str, str, bytes, int | None]]:
    """(label, file to damage, damaged bytes, pages of a valid shorter chain or None) for one source."""
    target = path.with_suffix(".raw") if path.suffix == ".mhd" else path
    data = target.read_bytes()
    size = len(data)
    out = []
    cuts = {1, 4, 8, 9, size // 3, size // 2, size - 1, *rng.integers(1, size, 22).tolist()}
    for cut in sorted(cuts):
        if 0 < cut < size:
            out.append((f"{name} cut to {cut} of {size} bytes", "cut", data[:cut], None))
    if path.suffix in (".tif", ".tiff"):
        in_data = np.zeros(size, bool)
        for start, end in _tiff_data_ranges(path):
            in_data[start:end] = True
        header_positions, data_positions = np.flatnonzero(~in_data), np.flatnonzero(in_data)
    elif path.suffix == ".mha":
        start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
        header_positions, data_positions = np.arange(start), np.arange(start, size)
    else:  # .mhd: the header is its own file; flip its bytes, and the raw file's bytes as data
        header = path.read_bytes()
        for pos in rng.choice(len(header), 15, replace=False):
            damaged = bytearray(header)
            damaged[pos] ^= 1 << int(rng.integers(8))
            out.append((f"{name} header byte {pos} flipped", "header", bytes(damaged), None))
        header_positions, data_positions = np.array([], int), np.arange(size)
    for where, positions in (("header", header_positions), ("data", data_positions)):
        if not len(positions):
            continue
        for pos in rng.choice(positions, min(15, len(positions)), replace=False):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << int(rng.integers(8))
            shorter = _shorter_chain(data, bytes(damaged), int(pos)) if path.suffix == ".tif" else None
            out.append((f"{name} {where} byte {pos} flipped", where, bytes(damaged), shorter))
    return out


def _wrong_dimsize(header: bytes) -> list[tuple[str, bytes]]:
    """DimSize lines whose element count differs from the data's (one that keeps the product, such
    as 16 32 10 for 32 32 5, reads as a different but self-consistent stack: out of reach as well)."""
    line = f"DimSize = {SIZE} {SIZE} {N_PAGES}".encode()
    assert line in header
    wrong = [f"{SIZE} {SIZE} {N_PAGES - 1}", f"{SIZE} {SIZE} {N_PAGES + 1}", f"{SIZE} {SIZE} {N_PAGES * 2}",
             f"{SIZE} {SIZE} 1", f"{SIZE - 1} {SIZE} {N_PAGES}", f"{SIZE} {SIZE + 1} {N_PAGES}",
             f"{SIZE} {SIZE} 0", f"{SIZE} {SIZE} -{N_PAGES}", f"{SIZE} {SIZE} 1000000000", f"{SIZE} {SIZE}",
             f"{SIZE} {SIZE} {N_PAGES} 2", f"{SIZE} {SIZE} five"]
    return [(f"DimSize = {w}", header.replace(line, f"DimSize = {w}".encode())) for w in wrong]


def _read(path: Path, label: str) -> tuple[list[np.ndarray] | None, str | None]:
    start = time.perf_counter()
    try:
        pages, error = read_stack(path), None
    except InputError as err:
        pages, error = None, str(err)
    except Exception as err:  # anything but InputError is the failure under test
        pytest.fail(f"{label}: {type(err).__name__} escaped read_stack: {err}")
    took = time.perf_counter() - start
    assert took < SLOW, f"{label}: took {took:.1f} s"
    if error is not None:
        assert error and "\n" not in error, f"{label}: not one line: {error!r}"
        assert path.name in error, f"{label}: the error does not name {path.name}: {error}"
    return pages, error


def _whole(pages: list[np.ndarray], n: int = N_PAGES) -> bool:
    return len(pages) == n and all(p.shape == (SIZE, SIZE, 3) and p.dtype == np.uint8 for p in pages)


def test_damage_corpus(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(20250901)
    outcomes: Counter[tuple[str, str]] = Counter()
    for name, make in SOURCES.items():
        source = tmp_path / "src" / name
        source.parent.mkdir(exist_ok=True)
        make(source)
        original = read_stack(source)
        assert _whole(original), name
        work = tmp_path / "work"
        for label, kind, blob, shorter in _variants(name, source, rng):
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(source.parent, work)
            stack = work / name
            if name.endswith(".mhd") and kind != "header":
                stack.with_suffix(".raw").write_bytes(blob)
            else:
                stack.write_bytes(blob)
            pages, error = _read(stack, label)
            if kind == "cut" and pages is not None:  # never fewer pages: whole only if the cut took padding
                assert _whole(pages) and all(np.array_equal(a, b) for a, b in zip(pages, original, strict=True)), \
                    f"{label}: read as {len(pages)} pages"
            elif pages is not None and shorter is not None:  # out of reach: a valid shorter chain
                assert len(pages) == shorter, f"{label}: {len(pages)} pages, the shorter chain has {shorter}"
            elif pages is not None:
                assert _whole(pages), f"{label}: {len(pages)} pages of {[p.shape for p in pages][:3]}"
            outcomes[kind, "refused" if error else "read"] += 1
        if name.endswith((".mha", ".mhd")):
            header_file = source.with_suffix(".mhd") if name.endswith(".mhd") else source
            for label, blob in _wrong_dimsize(header_file.read_bytes()):
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(source.parent, work)
                (work / header_file.name).write_bytes(blob)
                pages, error = _read(work / name, f"{name} {label}")
                assert error is not None, f"{name} {label}: read as {len(pages)} pages"
                outcomes["DimSize", "refused"] += 1
    captured = capfd.readouterr()  # readers print nothing of their own (ITK's noise joins the error line)
    assert "error" not in captured.err.lower(), captured.err[:500]
    total = sum(outcomes.values())
    print(f"{total} damaged variants: {dict(sorted(outcomes.items()))}")
    assert total >= 300
    assert outcomes["header", "refused"] > 0 and outcomes["data", "read"] > 0


def test_chain_ended_cleanly_is_out_of_reach(tmp_path: Path) -> None:
    """A next-IFD offset turned to 0 leaves a valid 2-page TIFF; nothing in the file says otherwise."""
    path = tmp_path / "stack.tif"
    _tif_plain(path)
    data = bytearray(path.read_bytes())
    _, fields = _ifd_chain(bytes(data))
    start, end = fields[1]
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    assert len(read_stack(path)) == 2  # out of reach: documented, not detected


def test_truncated_sample_sized_stack_names_the_page(tmp_path: Path) -> None:
    """The organizer's layout (data before each IFD, zlib): cut to a third, the IFD chain leaves the file."""
    path = tmp_path / "stack_5.tiff"
    with tifffile.TiffWriter(path) as tif:
        for page in synthetic_pages(16, size=64):
            tif.write(page, photometric="rgb", compression="zlib", metadata=None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"stack_5\.tiff is cut short or damaged: "):
        read_stack(path)


def _strip_beyond_the_end(path: Path) -> None:
    _tif_plain(path)
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[2].tags["StripByteCounts"]  # one strip: the count sits in the IFD entry
        at, fmt = tag.valueoffset, tif.byteorder + ("I" if tag.dtype == 4 else "H")
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, at, min(len(data), 2 ** (8 * struct.calcsize(fmt)) - 1))
    path.write_bytes(bytes(data))


def _chain_loops(path: Path) -> None:
    _tif_plain(path)
    data = bytearray(path.read_bytes())
    chain, fields = _ifd_chain(bytes(data))
    start, end = fields[3]
    data[start:end] = chain[1].to_bytes(end - start, "little")
    path.write_bytes(bytes(data))


def _imagej_count_disagrees(path: Path) -> None:
    _tif_imagej(path)
    data = path.read_bytes()
    assert data.count(f"images={N_PAGES}".encode()) == 1
    path.write_bytes(data.replace(f"images={N_PAGES}".encode(), f"images={N_PAGES + 1}".encode()))


@pytest.mark.parametrize(("damage", "message"), [
    (_strip_beyond_the_end, r"page 3's strip 1 \(bytes \d+ to \d+\) lies beyond the end of the file"),
    (_chain_loops, r"the IFD chain loops: page 5 points back to byte \d+"),
    (_imagej_count_disagrees, rf"its ImageJ header declares {N_PAGES + 1} images; {N_PAGES} are there"),
])
def test_each_sign_of_damage_is_named(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "stack.tif"
    damage(path)
    with pytest.raises(InputError, match=rf"^stack\.tif is cut short or damaged: {message}"):
        read_stack(path)


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_metaimage_data_shorter_than_header(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"stack{suffix}"
    _mha(path)
    data_file = path.with_suffix(".raw") if suffix == ".mhd" else path
    data_file.write_bytes(data_file.read_bytes()[:-SIZE])
    with pytest.raises(InputError, match=rf"stack\{suffix} is cut short or damaged: .*needs {SIZE * SIZE * 3 * 5}"):
        read_stack(path)


# -- end to end through process.py ---------------------------------------------------------------

def _cut_sample(job: Path) -> Path:
    source = next((SAMPLE_DIR / "input" / "images").rglob("stack_5.tiff"))
    stack = write_job(job, name=source.name)
    data = source.read_bytes()
    stack.write_bytes(data[: len(data) // 3])
    return stack


def _cut_generated(job: Path) -> Path:
    stack = write_job(job, synthetic_pages(16), name="stack_5.tiff")
    data = stack.read_bytes()
    stack.write_bytes(data[: len(data) // 3])
    return stack


@pytest.mark.parametrize("which", [
    "generated 16-page stack",
    pytest.param("organizer sample", marks=pytest.mark.skipif(
        not (SAMPLE_DIR / "input").is_dir(), reason="the organizer's sample job is not in ../shared")),
])
def test_process_refuses_a_truncated_stack(tmp_path: Path, model_dir: Path, which: str) -> None:
    stack = (_cut_sample if which == "organizer sample" else _cut_generated)(tmp_path / "in")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "process.py"), "--input", str(tmp_path / "in"), "--output", str(out),
         "--model", str(model_dir), "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "AMF_BAKED_MODEL": "/nonexistent"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert stack.name in lines[0] and "cut short or damaged" in lines[0], lines[0]
    assert not (out / OUTPUT_FILENAME).exists() and not (out.exists() and any(out.iterdir()))
