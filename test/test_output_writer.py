"""The organizer JSON writer: valid output lands whole, invalid output never lands at all."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from amf.atomic import write_atomic
from amf.errors import PredictionError
from amf.organizer import OUTPUT_FILENAME, score_of, to_entries, write_output


def test_valid_output_round_trips(tmp_path: Path) -> None:
    probs = [0.1, 0.5, 0.93]
    path = write_output(tmp_path / "out", to_entries(probs, threshold=0.5), n_pages=3)
    assert path == tmp_path / "out" / OUTPUT_FILENAME
    entries = json.loads(path.read_text())
    assert [e["class"] for e in entries] == ["normal", "atypical", "atypical"]
    assert [score_of(e) for e in entries] == pytest.approx(probs)
    assert all(type(e["confidence"]) is float for e in entries)
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary files left behind


def test_output_is_readable_by_others(tmp_path: Path) -> None:
    """Grand Challenge reads /output as another user than the one that wrote it."""
    path = write_output(tmp_path, to_entries([0.2], 0.5), 1)
    assert path.stat().st_mode & stat.S_IROTH


@pytest.mark.parametrize("entries, n_pages", [
    (to_entries([0.2, 0.7], 0.5), 3),  # one entry per page
    ([{"class": "mitosis", "confidence": 0.5}], 1),
    ([{"class": "normal", "confidence": 1}], 1),  # an int is not a float to the organizer
    ([{"class": "normal", "confidence": math.nan}], 1),
    ([{"class": "normal"}], 1),
])
def test_invalid_output_is_rejected_and_not_written(tmp_path: Path, entries: list, n_pages: int) -> None:
    with pytest.raises(PredictionError):
        write_output(tmp_path, entries, n_pages)
    assert not (tmp_path / OUTPUT_FILENAME).exists()


def test_failed_write_leaves_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / OUTPUT_FILENAME
    target.write_text("old")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text('[{"class": "nor')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_crash)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == [OUTPUT_FILENAME]
