#!/usr/bin/env bash
# Write the two uploads Grand Challenge takes: the image and, separately, the model.
#
#   ./export.sh [--build] [--image NAME] [--name BASENAME] [--out DIR] [--model DIR]
#
#   <out>/<name>.tar.gz  the saved image (docker/podman save | gzip), for "Container images"
#   <out>/model.tar.gz   the contents of model/ at the archive root, for "Models": Grand Challenge
#                        extracts it into /opt/ml/model, where process.py looks first. It carries a
#                        freshly built model.onnx (the CPU engine's graph) when the venv can build it
#
# Env: CONTAINER_ENGINE (docker|podman; default docker when its daemon answers, else podman),
#      AMF_IMAGE (default amf-midog25-t2:test, what test.sh builds),
#      PYTHON (default .venv/bin/python: builds model.onnx for the tarball).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${AMF_IMAGE:-amf-midog25-t2:test}"
NAME="amf-midog25-t2" OUT="$REPO" BUILD=0 MODEL="$REPO/model"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD=1; shift ;;
    --image) IMAGE="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--build] [--image NAME] [--name BASENAME] [--out DIR] [--model DIR]" >&2; exit 2 ;;
  esac
done

source "$REPO/scripts/container_engine.sh"
ENGINE="$(container_engine)" || exit 1

[[ -f "$MODEL/model.json" && -f "$MODEL/model.safetensors" ]] \
  || { echo "error: $MODEL is not a model directory (model.json + model.safetensors)" >&2; exit 1; }
mkdir -p "$OUT"

if [[ $BUILD == 1 ]]; then
  "$ENGINE" build -t "$IMAGE" "$REPO"
fi
"$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1 \
  || { echo "error: no image $IMAGE; build it (./test.sh or --build) first" >&2; exit 1; }

IMAGE_TAR="$OUT/$NAME.tar.gz"
echo "== saving $IMAGE to $IMAGE_TAR"
if [[ $ENGINE == podman ]]; then
  # docker-archive is the format Grand Challenge loads; podman's default would be OCI
  podman save --format docker-archive "$IMAGE" | gzip -c >"$IMAGE_TAR.partial"
else
  docker save "$IMAGE" | gzip -c >"$IMAGE_TAR.partial"
fi
mv "$IMAGE_TAR.partial" "$IMAGE_TAR"

MODEL_TAR="$OUT/model.tar.gz"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/amf-export.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
cp -r "$MODEL/." "$STAGE/"
rm -f "$STAGE/model.onnx"  # never ship a stale graph: the container would fall back to torch on the CPU
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
if ! { [[ -x "$PYTHON" ]] && (cd "$REPO" && "$PYTHON" -m amf.onnx_export "$STAGE"); }; then
  echo "warning: could not build model.onnx for the tarball; a CPU-only run of the upload will use torch" >&2
  rm -f "$STAGE/model.onnx"
fi
echo "== packing $MODEL into $MODEL_TAR (files at the archive root)"
# Root-owned and world-readable: the container user must read what Grand Challenge extracts.
tar -C "$STAGE" --owner=0 --group=0 --numeric-owner --mode=a+rX,go-w --sort=name --exclude=__pycache__ \
  -czf "$MODEL_TAR.partial" .
mv "$MODEL_TAR.partial" "$MODEL_TAR"

ls -lh "$IMAGE_TAR" "$MODEL_TAR"
tar -tzf "$MODEL_TAR" | sed 's/^/  model.tar.gz: /'
