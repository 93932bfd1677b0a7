"""One line describing the machine a benchmark ran on, for the committed results."""

from __future__ import annotations

import os
import platform
import subprocess
import time


def describe() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), cpu)
    except (OSError, subprocess.CalledProcessError):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
        torch_version = torch.__version__
    except ImportError:
        torch_version = "n/a"
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {gpu}; Python {platform.python_version()}, "
            f"torch {torch_version}; {time.strftime('%Y-%m-%d')}")
