#!/usr/bin/env bash
# The CPU's queue of long validation-only runs, one at a time, each result committed as it lands:
# what is missing of the design choices (python -m benchmarks.choices) and of the input and backbone
# studies (python -m benchmarks.studies), in the order below. About 25-90 minutes a run on 2 cores.
#
#   setsid nohup bash benchmarks/cpu_plan.sh >> runs/cpu_plan.log 2>&1 < /dev/null &   # start or resume
#   AMF_START_RUNS_UNTIL=14:40 setsid nohup bash benchmarks/cpu_plan.sh ... &        # start no run after 14:40 UTC
#   CPU_PLAN_DRY=1 bash benchmarks/cpu_plan.sh                                          # the plan, nothing run
#   pkill -f benchmarks/cpu_plan.sh; pkill -f "benchmarks.(choices|studies)"; pkill -f "training.train"   # stop
#
# Training runs from a worktree pinned at HEAD when the queue starts (CPU_PLAN_WORKTREE, default
# ../amf-cpu-plan), so edits in this checkout never change the code under a run; each JSON records
# that commit. Run folders live in this checkout's runs/ (git-ignored), so a stopped run resumes from
# its checkpoint when the queue starts again, and the raw JSONs and tables are committed here. With
# AMF_START_RUNS_UNTIL (HH:MM UTC or an ISO date-time) no training starts after that time and the queue
# stops there, so the end of a session or a loan is not spent on a run that cannot finish.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py="$repo/.venv/bin/python"
[[ -x $py ]] || { echo "error: $py is missing; set up the checkout first (README, first command)" >&2; exit 2; }
threads=${CPU_PLAN_THREADS:-$(nproc)}
common=("run.threads=$threads")
dry=()
[[ ${CPU_PLAN_DRY:-0} == 1 ]] && dry=(--dry-run)

if [[ ${#dry[@]} -eq 0 ]]; then
  wt=${CPU_PLAN_WORKTREE:-$repo/../amf-cpu-plan}
  git -C "$repo" worktree remove --force "$wt" 2>/dev/null || true
  git -C "$repo" worktree add --quiet --detach "$wt" HEAD
  ln -sfn "$repo/.venv" "$wt/.venv"
  echo "$(date -u +%FT%TZ) queue at $(git -C "$wt" rev-parse --short HEAD) in $wt, $threads threads"
  cd "$wt"
  export OMP_NUM_THREADS=$threads
else
  cd "$repo"
fi
# The order weighs what an answer could change: attention and the imbalance handling (cheap ERM runs),
# then the input crop (two top Track 2 teams crop to the figure; it would change what ships), then the
# alignment's form and strength (slower runs of a part that alone is within ERM's spread), then Lite2.
choices() { "$py" -m benchmarks.choices "${dry[@]}" --commit --results "$repo/benchmarks/results/choices" \
              --runs "$repo/runs/choices" "${common[@]}" --questions "$@"; }
studies() { "$py" -m benchmarks.studies "$@" "${dry[@]}" --commit --results "$repo/benchmarks/results/studies" \
              --runs "$repo/runs/studies" "${common[@]}"; }
choices attention imbalance
studies crop
choices alignment
studies backbone
echo "$(date -u +%FT%TZ) queue done"
