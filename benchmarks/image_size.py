"""The algorithm image's size at two commits: what a change to the Dockerfile or its requirements costs.

    python -m benchmarks.image_size --before 9ca62c9 --after HEAD

Builds the image of each commit from ``git archive`` of exactly what the Dockerfile copies (with
the container engine of test.sh: docker when its daemon answers, else podman; set
``CONTAINERS_CONF=ci/containers.conf`` for podman here), reads its uncompressed size, removes the
image, and writes ``benchmarks/results/image_size.json`` (raw) and a generated ``image_size.md``.
The base image must exist locally (CI's stand-in or the real one); the sizes include it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CONTEXT = ("Dockerfile", ".dockerignore", "requirements.txt", "requirements-train.txt", "process.py", "amf", "model")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def build_size(engine: str, commit: str, tag: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="amf-image-size-") as tmp:
        paths = [p for p in CONTEXT if _git("ls-tree", "--name-only", commit, p)]
        archive = subprocess.run(["git", "archive", "--format=tar", commit, *paths], cwd=REPO, capture_output=True,
                                 check=True).stdout
        Path(tmp, "ctx.tar").write_bytes(archive)
        with tarfile.open(Path(tmp, "ctx.tar")) as tar:
            tar.extractall(Path(tmp, "ctx"), filter="data")
        start = time.perf_counter()
        subprocess.run([engine, "build", "-q", "-t", tag, str(Path(tmp, "ctx"))], check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    try:
        size = int(subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True,
                                  text=True, check=True).stdout.strip())
    finally:
        subprocess.run([engine, "image", "rm", "-f", tag], capture_output=True, check=False)
    return {"commit": _git("rev-parse", "--short", commit), "bytes": size, "build_s": round(seconds, 1)}


def table(raw: dict[str, Any]) -> str:
    before, after = raw["before"], raw["after"]
    delta = after["bytes"] - before["bytes"]
    return "\n".join([
        "# Image size",
        "",
        f"Generated from [`image_size.json`](image_size.json) by `python -m benchmarks.image_size`. Measured "
        f"{raw['date'][:16].replace('T', ' ')} UTC with {raw['engine']} on base `{raw['base']}` (uncompressed "
        "sizes, base included).",
        "",
        "| image | commit | size |",
        "|---|---|---|",
        f"| before | {before['commit']} | {before['bytes'] / 1e9:.2f} GB |",
        f"| after | {after['commit']} | {after['bytes'] / 1e9:.2f} GB |",
        f"| change | | {delta / 1e6:+,.0f} MB ({100 * delta / before['bytes']:+.1f}%) |",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from benchmarks.publish import publish
    from leaderboard.engine import container_engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="commit (or ref) of the image before the change")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--json", type=Path, default=RESULTS / "image_size.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "image_size.md")
    args = parser.parse_args(argv)
    engine = container_engine()
    base = next(line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines()
                if line.upper().startswith("FROM "))
    raw = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "engine": engine, "base": base,
           "before": build_size(engine, args.before, "amf-image-size:before"),
           "after": build_size(engine, args.after, "amf-image-size:after")}
    return publish(raw, table, args.out, args.json)


if __name__ == "__main__":
    sys.exit(main())
