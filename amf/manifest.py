"""Reading a patch manifest into labelled cases and their pixels, shared by training and
``amf.leaderboard pack`` so both see the same rows, the same labels and the same pixels from the same
files.

A manifest is a CSV in the MIDOG25 atypical-set columns (``image_id, filename, coordinateX,
coordinateY, Tumor, Scanner, Origin, Species, expert1..3, majority``) or any subset that keeps
``image_id`` and the label column (e.g. OMG-Octo's ``image_id, filename, majority``).

* :func:`read_cases` is the one reading of a manifest: its rows as :class:`ManifestCase`, labels
  parsed by :func:`parse_label`, image files checked.
* :func:`parse_label` is the one label vocabulary: AMF/atypical/1 and NMF/normal/0, any case.
* :func:`read_rgb` is the one image decoder (true colours whatever the PNG's mode), and
  :func:`decode_image` adds :func:`amf.preprocess.prepare_page` for the model's input size.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amf.errors import InputError
from amf.preprocess import prepare_page, to_rgb_uint8

LABELS: dict[str, int] = {"amf": 1, "atypical": 1, "1": 1, "nmf": 0, "normal": 0, "0": 0}
"""Label cell (stripped, lower-cased) -> class index (1 atypical, 0 normal)."""

# Image modes whose array already means what to_rgb_uint8 expects (gray, gray + alpha, RGB, RGBA,
# bilevel, float); 16-bit gray is handled apart, everything else goes through Pillow's RGB conversion.
_ARRAY_MODES = {"1", "L", "LA", "RGB", "RGBA", "F"}


def read_manifest(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows and the column names of a CSV manifest; a BOM from spreadsheet exports is dropped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return rows, list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read manifest {path}: {err}") from err


def cell(row: Mapping[str | None, object], column: str) -> str:
    """A cell of a manifest row, stripped; "" where the row is short or the cell empty."""
    value = row.get(column)
    return value.strip() if isinstance(value, str) else ""


def parse_label(value: str | None, where: str, column: str = "majority") -> int:
    """1 for AMF/atypical/1, 0 for NMF/normal/0 (any case, surrounding blanks ignored); else a one-line
    InputError naming ``where`` (``file:line``) and the value."""
    label = LABELS.get((value or "").strip().lower())
    if label is None:
        raise InputError(f"{where}: unknown label {value!r} in column {column!r}; "
                         "expected AMF, atypical or 1 / NMF, normal or 0")
    return label


def read_rgb(path: Path) -> np.ndarray:
    """An image file as H×W×3 uint8 in its true colours: palette images through their palette, gray
    replicated, alpha dropped, 16-bit gray scaled to 8 bit as :func:`amf.preprocess.to_rgb_uint8` does;
    the first frame of a multi-frame file. Any failure is a one-line InputError naming the file."""
    from PIL import Image  # only reading patches (training, packing) needs pillow

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in _ARRAY_MODES:
                page = np.asarray(im)
            elif mode.startswith("I;16") or mode == "I":
                # 16-bit gray (mode "I" holds it in int32): as uint16, whose full range to_rgb_uint8 maps to 0..255
                page = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
            else:  # palette (P, PA), CMYK, YCbCr, ...: Pillow knows the colours; RGBA keeps a palette's alpha apart
                page = np.asarray(im.convert("RGBA" if mode in ("P", "PA") else "RGB"))
            return to_rgb_uint8(page)
    except (OSError, ValueError, SyntaxError, EOFError, InputError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot decode image {path}: {err}") from err


def decode_image(path: Path, size: int | None = None, center_crop: int = 0) -> np.ndarray:
    """:func:`read_rgb`, then (given a size) :func:`amf.preprocess.prepare_page`: the size×size×3 uint8
    patch the model sees."""
    rgb = read_rgb(path)
    return rgb if size is None else prepare_page(rgb, size, center_crop)


@dataclass(frozen=True)
class ManifestCase:
    """One labelled row of a manifest: where it is written, its image file, its label and its cells."""

    manifest: Path
    line: int  # in the CSV file; line 1 is the header
    image_id: str
    path: Path
    label: int  # 1 atypical, 0 normal
    row: Mapping[str | None, object]

    @property
    def where(self) -> str:
        return f"{self.manifest}:{self.line}"

    def cell(self, column: str) -> str:
        return cell(self.row, column)

    def pixels(self, size: int | None = None, center_crop: int = 0) -> np.ndarray:
        """The decoded image (:func:`decode_image`)."""
        return decode_image(self.path, size, center_crop)


def read_cases(manifest: Path, images: Path | None = None, *, label_column: str = "majority",
               columns: Iterable[str] = (), keep: Callable[[Mapping[str | None, object]], bool] | None = None
               ) -> list[ManifestCase]:
    """The labelled cases of one manifest, in file order; images in ``images`` (default
    ``<manifest dir>/images``). ``columns``: further columns that must exist; ``keep``: a row filter,
    applied before the row's label is read. One-line InputErrors for a manifest that cannot be read, lacks
    a column or lists no rows, an unknown label (file:line and the value) and missing image files."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise InputError(f"cannot read manifest {manifest}: it does not exist or is not a file")
    rows, present = read_manifest(manifest)
    needed = list(dict.fromkeys(["image_id", label_column, *columns]))
    absent = [c for c in needed if c not in present]
    if absent:
        raise InputError(f"manifest {manifest} has no column {', '.join(map(repr, absent))}; "
                         f"it has {', '.join(present) or 'none'}")
    if not rows:
        raise InputError(f"manifest {manifest} is empty: it lists no patches")
    folder = images if images is not None else manifest.parent / "images"
    cases, missing = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if keep is not None and not keep(row):
            continue
        label = parse_label(row.get(label_column), f"{manifest}:{line}", label_column)
        image_id = cell(row, "image_id")
        path = folder / image_id
        if not image_id or not path.is_file():
            missing.append(image_id or f"<empty image_id on line {line}>")
            continue
        cases.append(ManifestCase(manifest, line, image_id, path, label, row))
    if missing:
        raise InputError(f"{len(missing)} images of {manifest} are missing from {folder}, e.g. {missing[0]}")
    return cases
