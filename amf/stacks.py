"""Read a stacked ROI image (one mitotic-figure crop per page) as a list of RGB uint8 pages.

Grand Challenge hands the stack over as a multi-page TIFF or as a 3-D MetaImage (.mha/.mhd,
z = page). Every reader failure becomes one :class:`~amf.errors.InputError` line, because the
job log is all a participant sees of a failed submission.

A stack that cannot be read whole is refused, never read in part: the organizer fails a
submission whose output has the wrong length, so 5 answers for a 16-page stack cut short are
worse than a clear error. The signs of damage checked here: an IFD chain that leaves the file,
loops or disagrees with the pages tifffile finds; a strip or tile beyond the end of the file, of
length 0, or (uncompressed) of the wrong size for the page's geometry; a strip or tile count that
does not fit the page's size; an ImageJ stack holding another number of images than its header says; any
error or damage warning tifffile logs; a MetaImage whose data is not the size its header
(DimSize, channels, element type) says. Damage to pixel data alone is not detectable by any
reader (uncompressed TIFF and MetaImage carry no checksum) and is not caught here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from amf.errors import InputError
from amf.preprocess import to_rgb_uint8

TIFF_SUFFIXES = (".tif", ".tiff")
META_SUFFIXES = (".mha", ".mhd")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
log = logging.getLogger(__name__)
# tifffile logs these (at warning level) when a file is cut or its structure does not add up;
# anything it logs at error level counts as damage too.
_DAMAGE_SIGNS = ("invalid page offset", "invalid offset", "invalid next page", "corrupted", "could not read all",
                 "failed to read", "expected", "missing", "failed to reshape", "does not match",
                 "incompletely written", "circular", "out of range", "tifftag")
_BENIGN = ("coercing invalid ascii",)  # a tag's text that is not ASCII: the pixels are unaffected
# What ITK's MetaIO prints when it could not read everything (it may still return an image).
_NATIVE_DAMAGE = re.compile(r"fail|error|not read|cannot|invalid|corrupt", re.IGNORECASE)


class _Damage(Exception):
    """The file is cut short or its structure is inconsistent; the message says where."""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []  # everything, logged once on success
        self.damage: list[str] = []  # those that say the file is cut or inconsistent

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        self.messages.append(message)
        low = message.lower()
        if not any(b in low for b in _BENIGN) and (
                record.levelno >= logging.ERROR or any(sign in low for sign in _DAMAGE_SIGNS)):
            # "<tifffile.TiffPages @46674> invalid page offset 278138" -> "invalid page offset 278138"
            self.damage.append(re.sub(r"^<[^>]*>\s*", "", message) or message)


@contextlib.contextmanager
def _reader_warnings() -> Iterator[_Collect]:
    """Hold back reader warnings: they join the error line, or are logged once on success."""
    logger = logging.getLogger("tifffile")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextlib.contextmanager
def _native_output(into: list[str]) -> Iterator[None]:
    """Catch what C++ readers (ITK's MetaIO) print straight to fd 1 and 2, which logging never sees."""
    import os
    import tempfile

    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        for fd in (1, 2):
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            into.extend(ln.strip() for ln in sink.read().decode(errors="replace").splitlines() if ln.strip())


def _first_line(err: BaseException) -> str:
    """The informative line of a (possibly multi-line) reader error."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # SimpleITK opens with "Exception thrown in ...: file.cxx:99:" and says what went wrong after "ERROR:"
    for ln in lines:
        if "ERROR:" in ln:
            return ln.split("ERROR:", 1)[1].strip()
    lines = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]
    return lines[0] if lines else type(err).__name__


def _tiff_page(page) -> np.ndarray:
    """One TIFF page as H×W(×S), whatever its planar configuration."""
    array = page.asarray()
    axes = page.axes
    if "S" in axes and axes.index("S") < axes.index("Y"):  # planar (separate) storage: S×H×W
        array = np.moveaxis(array, axes.index("S"), -1)
    # A page with depth (SGI volumetric tiles) would be several pages; the organizer never sends one.
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    return array


def _ifd_chain(path: Path, size: int) -> list[int]:
    """Offsets of the main IFD chain, walked independently of tifffile; raises _Damage where it breaks."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            raise _Damage("the TIFF header is incomplete")
        version = struct.unpack(order + "H", head[2:4])[0]
        if version == 42:
            count_fmt, tag_size, offset_fmt = "H", 12, "I"
            first = struct.unpack(order + "I", head[4:8])[0]
        elif version == 43 and len(head) == 16:
            count_fmt, tag_size, offset_fmt = "Q", 20, "Q"
            first = struct.unpack(order + "Q", head[8:16])[0]
        else:
            raise _Damage(f"the TIFF header names version {version} (42 or 43 expected)")
        count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
        chain: list[int] = []
        seen: set[int] = set()
        offset = first
        while offset:
            page = len(chain) + 1
            if offset in seen:
                raise _Damage(f"the IFD chain loops: page {page} points back to byte {offset}")
            if offset + count_size > size:
                raise _Damage(f"page {page}'s IFD would start at byte {offset}, beyond the end of the file "
                              f"({size} bytes)")
            fh.seek(offset)
            n_tags = struct.unpack(order + count_fmt, fh.read(count_size))[0]
            end = offset + count_size + n_tags * tag_size + offset_size
            if end > size:
                raise _Damage(f"page {page}'s IFD at byte {offset} ({n_tags} tags) runs past the end of the "
                              f"file ({size} bytes)")
            fh.seek(end - offset_size)
            chain.append(offset)
            seen.add(offset)
            offset = struct.unpack(order + offset_fmt, fh.read(offset_size))[0]
    return chain


def _check_segments(page, number: int, size: int) -> None:
    """Each strip or tile of a page lies inside the file, and there are as many as its size needs."""
    offsets, counts = page.dataoffsets, page.databytecounts
    what = "tile" if page.is_tiled else "strip"
    needed = math.prod(page.chunked)
    if len(offsets) != len(counts) or len(offsets) != needed:
        raise _Damage(f"page {number} has {len(offsets)} {what} offsets and {len(counts)} byte counts; "
                      f"its size {'x'.join(map(str, page.shape))} needs {needed}")
    for i, (start, length) in enumerate(zip(offsets, counts, strict=True)):
        if length == 0 or start == 0:
            raise _Damage(f"page {number}'s {what} {i + 1} is empty (offset {start}, {length} bytes)")
        if start + length > size:
            raise _Damage(f"page {number}'s {what} {i + 1} (bytes {start} to {start + length}) lies beyond the end "
                          f"of the file ({size} bytes)")
    if page.compression != 1 or page.imagedepth > 1:
        return  # a compressed segment's size says nothing; its decoder checks it
    samples = page.samplesperpixel if page.planarconfig == 1 else 1
    if page.is_tiled:
        full = page.tiledepth * page.tilelength * math.ceil(page.tilewidth * samples * page.bitspersample / 8)
        smallest = [full] * len(counts)
    else:
        row = math.ceil(page.imagewidth * samples * page.bitspersample / 8)
        rows = max(1, min(page.rowsperstrip or page.imagelength, page.imagelength))
        per_plane = math.ceil(page.imagelength / rows)
        full = rows * row
        smallest = [min(rows, page.imagelength - (i % per_plane) * rows) * row for i in range(len(counts))]
    for i, (length, low) in enumerate(zip(counts, smallest, strict=True)):
        if not low <= length <= full:
            raise _Damage(f"page {number}'s uncompressed {what} {i + 1} holds {length} bytes; its geometry "
                          f"({'x'.join(map(str, page.shape))}, {page.bitspersample}-bit) needs "
                          f"{low if low == full else f'{low} to {full}'}")


def _read_tiff(path: Path) -> list[np.ndarray]:
    import tifffile

    size = path.stat().st_size
    chain = _ifd_chain(path, size)
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        if len(pages) != len(chain):
            raise _Damage(f"tifffile finds {len(pages)} pages but the IFD chain has {len(chain)}")
        for number, page in enumerate(pages, 1):
            _check_segments(page, number, size)
        if tif.is_imagej and len(tif.series) == 1:
            # ImageJ may store a long stack behind a single IFD; only the series knows all pages.
            series = tif.series[0]
            declared = (tif.imagej_metadata or {}).get("images")
            start, nbytes = series.dataoffset, series.nbytes
            if start is not None and start + nbytes > size:
                raise _Damage(f"its ImageJ series needs bytes {start} to {start + nbytes}; the file has {size}")
            array = series.asarray()
            tail = 3 if series.axes.endswith("S") else 2
            result = list(array.reshape(-1, *array.shape[-tail:]))
            if declared is not None and declared != len(result):
                raise _Damage(f"its ImageJ header declares {declared} images; {len(result)} are there")
            return result
        # Reduced-resolution pages (pyramid levels, thumbnails) are not crops of their own; a
        # "reduced" page as large as a full one is a damaged flag, not a thumbnail.
        full = [p for p in pages if not p.is_reduced]
        largest = max((math.prod(p.shape[:2]) for p in full), default=0)
        for number, page in enumerate(pages, 1):
            if page.is_reduced and math.prod(page.shape[:2]) >= largest > 0:
                raise _Damage(f"page {number} is flagged as a reduced-resolution image but is full size")
        return [_tiff_page(p) for p in full]


# bytes per element, as MetaIO defines them (metaTypes.h)
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _meta_header(path: Path) -> tuple[dict[str, str], int] | None:
    """The MetaImage header's fields and where its data begins; None when there is no ElementDataFile line."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    fields: dict[str, str] = {}
    position = 0
    for line in head.split(b"\n"):
        position += len(line) + 1
        key, sep, value = line.decode("latin-1").partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == "ElementDataFile":
                return fields, min(position, len(head))
    return None


def _meta_data_bytes(path: Path) -> int | None:
    """The data bytes the MetaImage header accounts for, or None when it cannot be worked out here."""
    parsed = _meta_header(path)
    if parsed is None:
        return None  # no data line: the reader says what is missing
    fields, data_start = parsed
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        ndims = int(fields.get("NDims", len(dims)))
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError) as err:
        raise _Damage(f"its header's DimSize/NDims/ElementNumberOfChannels are not whole numbers ({err})") from None
    element = _MET_BYTES.get(fields.get("ElementType", ""))
    if element is None:
        return None
    if ndims != len(dims) or any(d <= 0 for d in dims) or channels <= 0:
        raise _Damage(f"its header says NDims {ndims}, DimSize {' '.join(map(str, dims))}, "
                      f"{channels} channels")
    expected = math.prod(dims) * channels * element
    compressed = fields.get("CompressedData", "False")[:1] in ("T", "t", "1")
    source = fields["ElementDataFile"]
    if source == "LOCAL":
        with open(path, "rb") as fh:
            fh.seek(data_start)
            data = fh.read() if compressed else None
        available = path.stat().st_size - data_start
    elif source.startswith("LIST") or "%" in source or " " in source:
        return None  # one file per slice: rare, the reader checks it
    else:
        data_path = path.parent / source
        if not data_path.is_file():
            raise _Damage(f"its data file {source} is missing")
        skip = int(fields.get("HeaderSize", "0") or 0)
        available = data_path.stat().st_size - max(skip, 0)
        data = data_path.read_bytes()[max(skip, 0):] if compressed else None
        if skip < 0:  # -1: the data are the file's last bytes
            if available < expected:
                raise _Damage(f"its data file {source} holds {available} bytes; the header "
                              f"(DimSize {' '.join(map(str, dims))}) needs {expected}")
            return expected
    header = f"DimSize {' '.join(map(str, dims))}, {channels} x {fields['ElementType']}"
    if compressed and data is not None:
        declared = fields.get("CompressedDataSize")
        if declared and declared.isdigit() and int(declared) != len(data):
            raise _Damage(f"its header says {declared} compressed data bytes; the file holds {len(data)}")
        inflate = zlib.decompressobj()
        try:
            plain = len(inflate.decompress(data, expected + 1))
        except zlib.error as err:
            raise _Damage(f"its compressed data do not inflate ({err})") from None
        if plain != expected or not inflate.eof:
            raise _Damage(f"its compressed data inflate to {'more than ' if plain > expected else ''}{plain} bytes"
                          f"{'' if inflate.eof or plain > expected else ' and stop early'}; the header ({header}) "
                          f"needs {expected}")
    elif available != expected:
        raise _Damage(f"it holds {available} data bytes; its header ({header}) needs {expected}")
    return expected


def _read_meta(path: Path, found: _Collect) -> list[np.ndarray]:
    import SimpleITK as sitk

    _meta_data_bytes(path)  # before ITK allocates what a damaged header claims
    printed: list[str] = []
    try:
        with _native_output(printed):
            image = sitk.ReadImage(str(path))
    finally:
        found.messages.extend(printed)
    found.damage.extend(m for m in printed if _NATIVE_DAMAGE.search(m))
    array = sitk.GetArrayFromImage(image)  # z, y, x[, components]
    if image.GetDimension() == 2:
        return [array]
    if image.GetDimension() != 3:
        raise InputError(f"{path.name} is a {image.GetDimension()}-D image; a stack is 3-D (pages along z)")
    return list(array)


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "TIFF"
    if suffix in META_SUFFIXES:
        return "MetaImage"
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head[:4] in _TIFF_MAGIC:
        return "TIFF"
    if head.lstrip().startswith((b"ObjectType", b"NDims")):
        return "MetaImage"
    raise InputError(f"{path.name}: unknown stack format; expected .tif, .tiff, .mha or .mhd")


def read_stack(path: str | Path) -> list[np.ndarray]:
    """Every page of the stack in page order, each as an H×W×3 uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"stack {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"stack {path.name} is empty (0 bytes)")
    kind = _kind(path)
    with _reader_warnings() as found, warnings.catch_warnings():
        # numpy's RuntimeWarnings on absurd tag values (a tile length of 0) join the messages
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: found.messages.append(str(message))
        try:
            raw = _read_tiff(path) if kind == "TIFF" else _read_meta(path, found)
            if found.damage:
                raise _Damage(found.damage[0])
            pages = [to_rgb_uint8(p) for p in raw]
            error = None if pages else f"stack {path.name} holds no pages"
        except _Damage as err:
            error = f"{path.name} is cut short or damaged: {err}; refusing to answer for part of the stack"
        except InputError as err:
            error = f"{path.name}: {err}"
        except MemoryError:
            error = f"{path.name} does not fit in memory"
        except Exception as err:  # tifffile, imagecodecs and SimpleITK raise many types for a bad file
            error = f"cannot read {path.name} as a {kind} stack: {_first_line(err)}"
    if error:
        notes = [m for m in found.damage or found.messages if m not in error]
        raise InputError(error + (f" ({notes[0]})" if notes else ""))
    for message in found.messages:
        log.warning("%s: %s", path.name, message)
    return pages
