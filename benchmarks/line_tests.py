"""A pytest plugin: which tests run which lines of one module (the mutation benchmark's test selection).

    AMF_LINE_TESTS_MODULE=amf/metrics.py AMF_LINE_TESTS_OUT=/tmp/lines.json \\
        python -m pytest -p benchmarks.line_tests test/test_metrics.py

Writes ``{"module": ..., "tests": [nodeid, ...], "lines": {nodeid: [line, ...]}}`` in the order the
tests ran. Setup, call and teardown all count, so a fixture's lines belong to the test that built it.
Only this process is traced: a line that runs only in a subprocess (``process.py`` run by a test) or a
DataLoader worker is missing here, which is why the benchmark reruns every survivor on the full tests.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

_TARGET = os.path.realpath(os.environ.get("AMF_LINE_TESTS_MODULE", ""))
_OUT = os.environ.get("AMF_LINE_TESTS_OUT", "")
_order: list[str] = []
_lines: dict[str, set[int]] = {}
_hits: set[int] = set()


def _local(frame: FrameType, event: str, arg: Any):
    if event == "line":
        _hits.add(frame.f_lineno)
    return _local


_is_target: dict[str, bool] = {}


def _global(frame: FrameType, event: str, arg: Any):
    name = frame.f_code.co_filename
    hit = _is_target.get(name)
    if hit is None:  # a relative or linked name still counts; realpath once per file name
        hit = _is_target[name] = os.path.realpath(name) == _TARGET
    if hit:
        _hits.add(frame.f_lineno)
        return _local
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if not _TARGET:
        yield
        return
    _hits.clear()
    sys.settrace(_global)
    threading.settrace(_global)
    try:
        yield
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        _order.append(item.nodeid)
        _lines[item.nodeid] = set(_hits)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _TARGET and _OUT:
        data = {"module": _TARGET, "tests": _order, "lines": {k: sorted(v) for k, v in _lines.items()}}
        Path(_OUT).write_text(json.dumps(data) + "\n", encoding="utf-8")
