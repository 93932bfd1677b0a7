"""CI's stand-in base carries the torch of the Dockerfile's real base, named in one place (LABEL org.amf.base.*)."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
SCRIPT = REPO / "ci" / "build_base_image.sh"


def labels() -> dict[str, str]:
    return dict(re.findall(r'\borg\.amf\.base\.(\w+)="([^"]+)"', DOCKERFILE))


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "ci" / "base-constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def test_labels_name_the_base_torch() -> None:
    found = labels()
    assert set(found) == {"torch", "torchvision"}, found
    base = next(ln.split()[1] for ln in DOCKERFILE.splitlines() if ln.upper().startswith("FROM "))
    assert base.split(":")[1].split("-")[0] == found["torch"], (base, found)


def test_constraints_resolve_the_same_versions() -> None:
    pins, found = constraints(), labels()
    assert pins["torch"] == found["torch"] and pins["torchvision"] == found["torchvision"]
    assert all(v and re.fullmatch(r"[\w.+!-]+", v) for v in pins.values()), pins


def test_the_script_reads_the_labels() -> None:
    """The script's own parser (its base_label function) finds the same versions."""
    function = re.search(r"^base_label\(\) \{.*?^\}", SCRIPT.read_text(), re.S | re.M)
    assert function, "base_label() not found in ci/build_base_image.sh"
    out = subprocess.run(["bash", "-c", f'{function.group(0)}\nbase_label torch; base_label torchvision'],
                         env={"REPO": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out == [labels()["torch"], labels()["torchvision"]]
    assert "TORCH_VERSION:-" not in SCRIPT.read_text()  # no second place to set it
