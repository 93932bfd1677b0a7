"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes 0600 files; give the result the mode a plain open() would, so a model
    # directory or an output stays readable by other users (e.g. the container's user).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text, written atomically (a generated table, a config, a JSON document)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def nan_to_null(obj: Any) -> Any:
    """A copy with every NaN or infinite float as None: strict JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_null(v) for v in obj]
    return obj


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2, nan_as_null: bool = False) -> Path:
    """Strict JSON (a NaN raises) unless ``nan_as_null``, for reports where a metric may be undefined."""
    text = json.dumps(nan_to_null(obj) if nan_as_null else obj, indent=indent, allow_nan=False) + "\n"
    return write_text_atomic(path, text)
