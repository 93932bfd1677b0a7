"""The tail every benchmark shares: keep the raw numbers, generate the table from them, show it.

The table is always rendered from ``raw`` (never from the live measurement) so that ``--table-only``
on the committed JSON regenerates exactly what a measuring run wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from amf.atomic import write_json_atomic, write_text_atomic


def publish(raw: dict[str, Any], render: Callable[[dict[str, Any]], str], table: Path,
            raw_json: Path | None = None) -> int:
    """Write ``raw_json`` (when given: a fresh measurement), then ``table`` rendered from ``raw``; print it.

    NaN is stored as null so the file stays strict JSON for other tools. Returns 0, the exit status.
    """
    if raw_json is not None:
        write_json_atomic(raw_json, raw, indent=1, nan_as_null=True)
    text = render(raw)
    write_text_atomic(table, text)
    print(text)
    return 0
