"""Where a result came from: the code's git commit (and whether the tree was dirty) and the machine.

Model cards, training runs, benchmarks and the leaderboard all record these, through this module.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=True, timeout=30).stdout


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """``{"commit": short hash or "unknown", "dirty": bool or None}`` of the checkout holding ``path``.

    Dirty means tracked files differ from the commit: the code that ran is then not exactly the
    commit's, and a result says so.
    """
    cwd = Path(path) if path else _HERE
    try:
        commit = _git("rev-parse", "--short", "HEAD", cwd=cwd).strip()
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=cwd).strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": dirty}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def available_cpus() -> int:
    """CPUs this process may use (affinity and cgroup quota), not the host's count."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


def machine() -> dict[str, Any]:
    """The machine as data, for raw result files."""
    info: dict[str, Any] = {"cpu": cpu_name(), "cpus": available_cpus(),
                            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
                            "python": platform.python_version(), "gpu": None, "torch": None}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def describe_machine() -> str:
    """The machine in one line, for generated tables."""
    m = machine()
    return (f"{m['cpu']}, {m['cpus']} cores, {m['memory_gib']} GiB RAM, {m['gpu'] or 'no GPU'}; "
            f"Python {m['python']}, torch {m['torch'] or 'n/a'}; {time.strftime('%Y-%m-%d')}")
