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
from amf.organizer import OUTPUT_FILENAME, score_of, to_entries, validation_errors, write_output


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


def test_confidence_at_the_ends_of_the_unit_interval_is_valid(tmp_path: Path) -> None:
    """0.0 and 1.0 are probabilities: a saturated sigmoid gives exactly these in float32."""
    entries = [{"class": "normal", "confidence": 0.0}, {"class": "atypical", "confidence": 1.0}]
    assert validation_errors(entries, 2, strict=True) == []
    assert json.loads(write_output(tmp_path, entries, 2).read_text()) == entries


@pytest.mark.parametrize("confidence", [1.5, -0.25, 1.0000001])
def test_confidence_outside_the_unit_interval_is_rejected_by_default(tmp_path: Path, confidence: float) -> None:
    """The organizer would accept it; validation_errors (strict by default) and so write_output do not."""
    entries = [{"class": "atypical", "confidence": confidence}]
    assert validation_errors(entries, 1, strict=False) == []
    (reason,) = validation_errors(entries, 1)
    assert reason.startswith(f"entry 0: confidence {confidence} is not a probability in [0, 1]")
    with pytest.raises(PredictionError, match=r"is not a probability in \[0, 1\]"):
        write_output(tmp_path, entries, 1)
    assert not (tmp_path / OUTPUT_FILENAME).exists()


@pytest.mark.parametrize("entries, n_pages, n_reasons", [
    ([{"class": "normal", "confidence": 2.0}], 1, 1),
    ([{"class": "normal", "confidence": 2.0}, {"class": "x", "confidence": 0.5}], 2, 2),
    ([{"class": "x", "confidence": 1}], 2, 3),  # length, class and type
])
def test_rejection_names_the_first_reason_and_counts_the_rest(tmp_path: Path, entries: list, n_pages: int,
                                                              n_reasons: int) -> None:
    reasons = validation_errors(entries, n_pages)
    assert len(reasons) == n_reasons
    more = f" (and {n_reasons - 1} more)" if n_reasons > 1 else ""  # one reason: nothing appended
    with pytest.raises(PredictionError) as err:
        write_output(tmp_path, entries, n_pages)
    assert str(err.value) == f"output rejected before writing: {reasons[0]}{more}"
