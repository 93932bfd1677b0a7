"""Reading a patch manifest (MIDOG25 atypical-set CSV columns or any subset), shared by training and
``amf.leaderboard pack`` so both see the same rows from the same file."""

from __future__ import annotations

import csv
from pathlib import Path

from amf.errors import InputError


def read_manifest(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows and the column names of a CSV manifest; a BOM from spreadsheet exports is dropped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return rows, list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read manifest {path}: {err}") from err
