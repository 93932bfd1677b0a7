"""Read a stacked ROI image (one mitotic-figure crop per page) as a list of RGB uint8 pages.

Grand Challenge hands the stack over as a multi-page TIFF or as a 3-D MetaImage (.mha/.mhd,
z = page). Every reader failure becomes one :class:`~amf.errors.InputError` line, because the
job log is all a participant sees of a failed submission.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from amf.errors import InputError
from amf.preprocess import to_rgb_uint8

TIFF_SUFFIXES = (".tif", ".tiff")
META_SUFFIXES = (".mha", ".mhd")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
log = logging.getLogger(__name__)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _reader_warnings() -> Iterator[list[str]]:
    """Hold back reader warnings: they join the error line, or are logged once on success."""
    logger = logging.getLogger("tifffile")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.messages
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


def _read_tiff(path: Path) -> list[np.ndarray]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_imagej and len(tif.series) == 1:
            # ImageJ may store a long stack behind a single IFD; only the series knows all pages.
            series = tif.series[0]
            array = series.asarray()
            tail = 3 if series.axes.endswith("S") else 2
            return list(array.reshape(-1, *array.shape[-tail:]))
        # Reduced-resolution pages (pyramid levels, thumbnails) are not crops of their own.
        pages = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
        return [_tiff_page(p) for p in pages]


def _read_meta(path: Path, messages: list[str]) -> list[np.ndarray]:
    import SimpleITK as sitk

    with _native_output(messages):
        image = sitk.ReadImage(str(path))
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
    with _reader_warnings() as warnings:
        try:
            raw = _read_tiff(path) if kind == "TIFF" else _read_meta(path, warnings)
            pages = [to_rgb_uint8(p) for p in raw]
            error = None if pages else f"stack {path.name} holds no pages"
        except InputError as err:
            error = f"{path.name}: {err}"
        except MemoryError:
            error = f"{path.name} does not fit in memory"
        except Exception as err:  # tifffile, imagecodecs and SimpleITK raise many types for a bad file
            error = f"cannot read {path.name} as a {kind} stack: {_first_line(err)}"
    if error:
        raise InputError(error + (f" ({warnings[0]})" if warnings else ""))
    for message in warnings:
        log.warning("%s: %s", path.name, message)
    return pages
