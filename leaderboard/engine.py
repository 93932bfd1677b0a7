"""Which container engine runs the images: one rule, the same as test.sh and export.sh use
(scripts/container_engine.sh): ``CONTAINER_ENGINE`` when set, else docker when its daemon answers,
else podman."""

from __future__ import annotations

import os
import shutil
import subprocess

from amf.errors import InputError


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def container_engine(requested: str | None = None) -> str:
    """``requested`` (a command-line choice) if given, else the rule above; refused if not installed."""
    engine = requested or os.environ.get("CONTAINER_ENGINE") or ("docker" if _docker_answers() else "podman")
    if shutil.which(engine) is None:
        raise InputError(f"container engine {engine!r} not found (set CONTAINER_ENGINE or --engine; "
                         "docker is used when its daemon answers, podman otherwise)")
    return engine
