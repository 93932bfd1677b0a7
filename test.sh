#!/usr/bin/env bash
# Build the algorithm image and run it the way Grand Challenge does, then check its answer.
#
#   ./test.sh [--model DIR] [--expected FILE] [--cleanup] [--no-build]
#
# Runs the image on test/input with no network, the input read-only, /tmp as a tmpfs and only
# the output folder writable (plus the GPU when this machine has one), and compares the result
# with test/expected_output.json (amf/compare.py): confidences within AMF_TOLERANCE, classes exactly.
#
# --model DIR      bake DIR instead of ./model (the image is built from a staged copy of the repo)
# --expected FILE  compare with FILE instead of test/expected_output.json
# --cleanup        remove the image afterwards (or AMF_TEST_CLEANUP=1), as CI does
# --no-build       reuse an existing image
# Env: CONTAINER_ENGINE (docker|podman; default docker when its daemon answers, else podman),
#      AMF_IMAGE (default amf-midog25-t2:test), AMF_TOLERANCE (1e-3), AMF_CLASS_MARGIN (GPU runs: 0.02).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${AMF_IMAGE:-amf-midog25-t2:test}"
TOLERANCE="${AMF_TOLERANCE:-1e-3}"
MODEL="" EXPECTED="$REPO/test/expected_output.json" CLEANUP="${AMF_TEST_CLEANUP:-0}" BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL="$(cd "$2" && pwd)"; shift 2 ;;
    --expected) EXPECTED="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    --cleanup) CLEANUP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--model DIR] [--expected FILE] [--cleanup] [--no-build]" >&2; exit 2 ;;
  esac
done

fail() { echo "FAIL: $*" >&2; exit 1; }

source "$REPO/scripts/container_engine.sh"
ENGINE="$(container_engine)" || fail "no container engine"

GPU_ARGS=()
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  if [[ $ENGINE == docker ]]; then GPU_ARGS=(--gpus all); else GPU_ARGS=(--device nvidia.com/gpu=all); fi
fi

[[ -f "$EXPECTED" ]] || fail "$EXPECTED is missing; write it with: python test/make_fixtures.py --expected"
[[ -f "$REPO/test/input/inputs.json" ]] || fail "test/input is missing; write it with: python test/make_fixtures.py"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/amf-test.XXXXXX")"
cleanup() {
  rm -rf "$WORK"
  if [[ $CLEANUP == 1 ]]; then
    "$ENGINE" image rm -f "$IMAGE" >/dev/null 2>&1 && echo "removed image $IMAGE" || true
  fi
}
trap cleanup EXIT

if [[ $BUILD == 1 ]]; then
  CONTEXT="$REPO"
  if [[ -n "$MODEL" ]]; then
    # Stage exactly what the Dockerfile copies, with the chosen model as model/.
    CONTEXT="$WORK/context"
    mkdir -p "$CONTEXT"
    cp -r "$REPO/Dockerfile" "$REPO/.dockerignore" "$REPO/requirements.txt" "$REPO/requirements-train.txt" "$REPO/process.py" "$REPO/amf" "$CONTEXT/"
    cp -r "$MODEL" "$CONTEXT/model"
  fi
  [[ -f "$CONTEXT/model/model.json" ]] || fail "no model/ to bake into the image; train one or pass --model DIR"
  echo "== building $IMAGE with $ENGINE (model: ${MODEL:-$REPO/model})"
  start=$SECONDS
  "$ENGINE" build -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT"
  echo "== built in $((SECONDS - start)) s"
fi

OUT="$WORK/output"
mkdir -p "$OUT"
chmod 777 "$OUT"  # the container runs as an unprivileged user
echo "== running $IMAGE (${GPU_ARGS[*]:-CPU only}, --network none, input read-only)"
start=$SECONDS
set +e
"$ENGINE" run --rm --network none \
  "${GPU_ARGS[@]}" \
  --read-only --tmpfs /tmp \
  -v "$REPO/test/input:/input:ro" \
  -v "$OUT:/output" \
  "$IMAGE" 2>"$WORK/container.log"
rc=$?
set -e
cat "$WORK/container.log" >&2
echo "== container exited with $rc after $((SECONDS - start)) s"
[[ $rc == 0 ]] || fail "the container exited with $rc"
# The image builds model.onnx for its baked model, so a CPU run must take the ONNX Runtime engine.
if [[ ${#GPU_ARGS[@]} -eq 0 ]] && ! grep -qF ", engine onnxruntime " "$WORK/container.log"; then
  fail "a CPU run of the image did not use the ONNX Runtime engine (see its log above)"
fi

RESULT="$OUT/multiple-mitotic-figure-classification.json"
[[ -f "$RESULT" ]] || fail "the container wrote no $(basename "$RESULT")"
# Classes are compared everywhere on a CPU run; on a GPU run only where the CPU's probability lies
# at least AMF_CLASS_MARGIN (0.02) from the threshold (amf/compare.py says how many it skipped).
MARGIN=0
if [[ ${#GPU_ARGS[@]} -gt 0 ]]; then MARGIN="${AMF_CLASS_MARGIN:-0.02}"; fi
CARD="${MODEL:-$REPO/model}/model.json"
python3 "$REPO/amf/compare.py" "$RESULT" "$EXPECTED" --card "$CARD" --tolerance "$TOLERANCE" --margin "$MARGIN" \
  || fail "the output differs from $EXPECTED"
echo "PASS: $IMAGE reproduces $(basename "$EXPECTED")"
