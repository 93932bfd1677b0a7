#!/usr/bin/env bash
# The CPU's queue of long validation-only runs, one at a time, each result committed as it lands (with
# the model card and README tables regenerated from it, benchmarks/derived.py):
# what is missing of the design choices (python -m benchmarks.choices) and of the input, backbone and
# stain studies (python -m benchmarks.studies), in the order below. About 25-90 minutes a run on 2 cores.
#
#   setsid nohup bash benchmarks/cpu_plan.sh >> runs/cpu_plan.log 2>&1 < /dev/null &   # start or resume
#   AMF_START_RUNS_UNTIL=14:40 setsid nohup bash benchmarks/cpu_plan.sh ... &        # start no run after 14:40 UTC
#   CPU_PLAN_DRY=1 bash benchmarks/cpu_plan.sh                                          # the plan, nothing run
#   bash benchmarks/cpu_plan.sh lodo backbone alignment                                 # these stages, in this order
#   CPU_PLAN_CANDIDATE=augment.hed_bias=0.05 bash benchmarks/cpu_plan.sh candidate      # a change, held out
#   CPU_PLAN_CANDIDATE=augment.hed_bias=0.05 bash benchmarks/cpu_plan.sh ensemble       # its 5 folds, on validation
#   bash benchmarks/cpu_plan.sh nested                                                  # choosing across domains
#   bash benchmarks/cpu_plan.sh lodo-ensemble                                           # the shipped model, held out
#   pkill -f benchmarks/cpu_plan.sh; pkill -f "benchmarks.(choices|studies|ensemble_record)"; \
#     pkill -f "training.(train|ensemble)"                                              # stop
#
# Stages (default: attention-imbalance crop backbone alignment; the backbone study's 2 runs before the
# alignment question's 7, so a short budget still answers a whole question): the choices' questions and the studies
# (`stain`, the stain jitter's range, only when named); `candidate`, one change to the shipped recipe
# checked held out (CPU_PLAN_CANDIDATE='KEY=VALUE ...': its Full arm, 6 runs, set against the shipped one,
# then the threshold transfer on its seed pairs);
# `lodo`, the leave-one-domain-out ablation's ERM and Full arms (2 seeds, 3 domains, 12 runs) of the
# recipe that ships next, into benchmarks/results/ablation-<its settings>/ (the LODO numbers its card
# needs; measured, never used to choose), then the threshold transfer on its seed pairs beside them
# (benchmarks/threshold_transfer.py, a few minutes); and `ensemble`, the 5-fold ensemble of the recipe that ships
# next (benchmarks/answers.py: BASE_CONFIG with SHIPS_NEXT) into runs/ensemble/, each finished fold's
# record committed as it lands (benchmarks/ensemble_record.py). A fold takes about 43 minutes on 2
# cores (2026-11-29: 35-37 of training epochs, the rest its final scoring; CPU_PLAN_FOLD_MINUTES),
# so under AMF_START_RUNS_UNTIL it starts only if the folds still to train would end by the time a
# single run started at that deadline would (about 30 minutes after it): a run folder lost with its session keeps only the records; one that stays resumes from
# its last checkpoint. Shipping it stays a reviewed step:
# scripts/ship_model.sh runs/ensemble/model. `nested` (only when named): the shipped recipe and its stain
# variants each trained on one domain alone and scored on the others (2 seeds, 3 domains, 18 runs of 2-10
# minutes), the inner evidence of leave-one-domain-out validation nested inside the held-out test
# (benchmarks/nested_lodo.py); with CPU_PLAN_CANDIDATE, that change against the recipe shipped now.
# `lodo-ensemble` (only when named): the shipped recipe's 5-fold ensemble with each domain left out and
# scored on it as it ships, 50 minutes (TUPAC16 out) to 2.5 hours a domain (benchmarks/lodo_ensemble.py).
#
# Training runs from a worktree pinned at HEAD when the queue starts (CPU_PLAN_WORKTREE, default
# ../amf-cpu-plan), so edits in this checkout never change the code under a run; each JSON records
# that commit. Run folders live in this checkout's runs/ (git-ignored; CPU_PLAN_RUNS), so a stopped
# run resumes from its checkpoint when the queue starts again, and the raw JSONs and tables are
# committed here. With AMF_START_RUNS_UNTIL (HH:MM UTC or an ISO date-time) no training starts after
# that time and the queue stops there, so the end of a session or a loan is not spent on a run that
# cannot finish.
#
# Side work beside a run: pause the run for anything heavy (kill -STOP / -CONT the training.train
# process). `nice -n 19` alone does not protect it: the kernel's autogroups weigh each session (setsid)
# as one, so a niced job in its own session took a full core and tripled the run's epoch time here
# (2026-11-29: 48 s to 130-150 s a Full epoch); lowering that session's group, `echo 19 >
# /proc/<pid>/autogroup`, brought the epochs back to 48-54 s, with the side job living off idle time.
#
# Everything runs inside main(), which bash reads whole before it starts: an edit or a checkout of this
# file while a queue runs cannot change what that queue does next.
set -euo pipefail

main() {
  stages=("$@")
  [[ ${#stages[@]} -gt 0 ]] || stages=(attention-imbalance crop backbone alignment)
  for stage in "${stages[@]}"; do  # every name checked before anything runs
    [[ $stage =~ ^(attention-imbalance|crop|alignment|backbone|stain|lodo|candidate|ensemble|nested|lodo-ensemble)$ ]] || {
      echo "error: unknown stage $stage; choose from attention-imbalance crop backbone alignment stain lodo" \
           "candidate ensemble nested lodo-ensemble" >&2
      exit 2; }
    [[ ($stage != candidate && -z ${CPU_PLAN_CANDIDATE:-}) ||
       ${CPU_PLAN_CANDIDATE:-} =~ ^[A-Za-z_.]+=[^[:space:]]+([[:space:]]+[A-Za-z_.]+=[^[:space:]]+)*$ ]] || {
      echo "error: the candidate stage needs CPU_PLAN_CANDIDATE='KEY=VALUE ...', the change to check held out" \
           "(and the ensemble stage takes it in that form)" >&2
      exit 2; }
  done
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  py="$repo/.venv/bin/python"
  [[ -x $py ]] || { echo "error: $py is missing; set up the checkout first (README, first command)" >&2; exit 2; }
  if [[ "${AMF_START_RUNS_UNTIL:-}" =~ ^[0-9]{1,2}:[0-9]{2}$ ]]; then
    # Resolved once, here: each driver reads HH:MM as the next such time after it started, so a stage
    # whose driver started past the deadline took it for tomorrow's and trained on (2026-11-29).
    AMF_START_RUNS_UNTIL=$(cd "$repo" && "$py" -c 'import datetime as d, sys
from benchmarks.driver import start_deadline
print(d.datetime.fromtimestamp(start_deadline(sys.argv[1]), d.timezone.utc).isoformat())' "$AMF_START_RUNS_UNTIL")
    export AMF_START_RUNS_UNTIL
  fi
  [[ -z ${AMF_START_RUNS_UNTIL:-} ]] || echo "no training starts after $AMF_START_RUNS_UNTIL"
  threads=${CPU_PLAN_THREADS:-$(nproc)}
  runs=$(realpath -m -- "${CPU_PLAN_RUNS:-$repo/runs}")  # run folders (checkpoints), git-ignored; absolute,
  # since the stages run from the worktree
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
  # then the input crop (two top Track 2 teams crop to the figure; it would change what ships), then Lite2
  # (two runs, the last build item of issue #10), then the alignment's form and strength (seven slower
  # runs of a part that alone is within ERM's spread).
  choices() { "$py" -m benchmarks.choices "${dry[@]}" --commit --results "$repo/benchmarks/results/choices" \
                --runs "$runs/choices" "${common[@]}" --questions "$@"; }
  studies() { "$py" -m benchmarks.studies "$@" "${dry[@]}" --commit --results "$repo/benchmarks/results/studies" \
                --runs "$runs/studies" "${common[@]}"; }
  base=$("$py" -m benchmarks.answers --base)  # the config every answer is an override on
  lodo() {
    local answer name results
    answer=$("$py" -m benchmarks.answers)
    name=$("$py" -m benchmarks.answers --slug)
    results=$("$py" -m benchmarks.answers --ablation)
    # ERM switches the parts off, so a recipe that changes only their settings (the alignment's form)
    # has the shipped recipe's ERM runs already: borrowed, checked run by run, not trained again.
    local erm borrow=() shipped against=()
    erm=$("$py" -m benchmarks.answers --erm-from)
    [[ -z $erm ]] || borrow=(--erm-from "$repo/$erm")
    # A recipe that might ship is set against the one that shipped, Full arm by Full arm.
    shipped=$("$py" -m benchmarks.answers --against)
    [[ -z $shipped ]] || against=(--against "$repo/$shipped")
    # shellcheck disable=SC2086  # the answers' words are overrides without spaces
    "$py" -m benchmarks.ablation "${dry[@]}" --commit --arm ERM --arm Full --config "$base" \
      --results "$repo/$results" --runs "$runs/ablation-$name" "${borrow[@]}" "${against[@]}" \
      "${common[@]}" $answer
    # Reached only once every run has trained (a stopped driver exits non-zero): the seed pairs' check
    # of the members' threshold on their average, for the card; it skips pairs it has measured. Its
    # failure is a warning: the stages after this one still run.
    transfer_check "$name" "$("$py" -m benchmarks.answers --transfer)"
  }
  transfer_check() {  # NAME JSON: the seed pairs' threshold check of runs/ablation-NAME into JSON
    "$py" -m benchmarks.threshold_transfer "${dry[@]}" --commit --runs "$runs/ablation-$1" --json "$repo/$2" ||
      echo "warning: the threshold transfer of $runs/ablation-$1 failed; rerun it by hand:" \
           "python -m benchmarks.threshold_transfer --runs $runs/ablation-$1 --json $2 --commit" >&2
  }
  # One change (CPU_PLAN_CANDIDATE, training overrides) on the shipped recipe, held out: its Full arm only
  # (2 seeds, 3 domains, 6 runs) into benchmarks/results/ablation-<shipped settings + the change>/, set
  # against the shipped recipe's Full arm. What a study's variant does under a domain shift, measured:
  # the studies pick on validation.
  candidate() {
    local change answer name results shipped
    read -r -a change <<< "$CPU_PLAN_CANDIDATE"  # KEY=VALUE words (checked above)
    answer=$("$py" -m benchmarks.answers "${change[@]}")
    name=$("$py" -m benchmarks.answers --slug "${change[@]}")
    results=$("$py" -m benchmarks.answers --ablation "${change[@]}")
    shipped=$("$py" -m benchmarks.answers --against "${change[@]}")
    # shellcheck disable=SC2086  # the answers' words are overrides without spaces
    "$py" -m benchmarks.ablation "${dry[@]}" --commit --arm Full --config "$base" --results "$repo/$results" \
      --runs "$runs/ablation-$name" --against "$repo/$shipped" "${common[@]}" $answer
    transfer_check "$name" "$("$py" -m benchmarks.answers --transfer "${change[@]}")"
  }
  # OUT RESULTS WHAT MINUTES CMD...: train an ensemble's missing folds (CMD, a training.ensemble command) into
  # OUT, each finished fold's record committed to RESULTS as it lands (benchmarks/ensemble_record.py), if
  # the folds left, at MINUTES a fold, would end by the time a single run started at AMF_START_RUNS_UNTIL
  # would (about 30 minutes after it); otherwise stop the queue (exit 3) and train nothing.
  train_folds() {
    local out=$1 results=$2 what=$3 per_fold=$4 finished minutes pid
    shift 4
    finished=$( (compgen -G "$out/fold-*/summary.json" || true) | wc -l)
    minutes=$(( per_fold * (5 - finished) ))
    "$py" -c "import sys, time; from benchmarks.driver import start_deadline; d = start_deadline(); \
  sys.exit(0 if d is None or time.time() + ($minutes - 30) * 60 <= d else 3)" || {
      echo "stopped: $what's $((5 - finished)) folds left (~$minutes min) would end well past" \
           "AMF_START_RUNS_UNTIL; they start on a later call"
      exit 3; }
    mkdir -p "$out"
    "$@" >> "$out/driver.log" 2>&1 &
    pid=$!
    "$py" -m benchmarks.ensemble_record "$out" --follow "$pid" --commit --results "$results"
    wait "$pid" || { echo "error: $what's training failed; see $out/driver.log" >&2; exit 1; }
  }
  # With CPU_PLAN_CANDIDATE, the ensemble of the shipped recipe with that change instead, into
  # runs/ensemble-<its settings>/ and benchmarks/results/ensemble-<its settings>/ (never the shipped
  # ensemble's records), then its out-of-fold scores set against the shipped ensemble's, fold by fold
  # (benchmarks/oof_against.py): validation evidence on all of the data, and a model ready to ship if chosen.
  ensemble() {
    local answer out="$runs/ensemble" results="$repo/benchmarks/results/ensemble" change=() name=""
    if [[ -n ${CPU_PLAN_CANDIDATE:-} ]]; then
      read -r -a change <<< "$CPU_PLAN_CANDIDATE"
      name=$("$py" -m benchmarks.answers --slug "${change[@]}")
      out="$runs/ensemble-$name"
      results="$repo/benchmarks/results/ensemble-$name"
    fi
    answer=$("$py" -m benchmarks.answers "${change[@]}")
    # shellcheck disable=SC2206  # the answers' words are overrides without spaces
    local cmd=("$py" -m training.ensemble --config "$base" --folds 5 --out "$out"
               $answer run.progress=false "${common[@]}")
    if [[ ${#dry[@]} -gt 0 ]]; then
      echo "ensemble: $(compgen -G "$out/fold-*/summary.json" | wc -l) of 5 folds done"
      echo "  ${cmd[*]}"
      echo "  records: $results"
      return
    fi
    train_folds "$out" "$results" "the ensemble" "${CPU_PLAN_FOLD_MINUTES:-43}" "${cmd[@]}"
    [[ -z $name ]] || "$py" -m benchmarks.oof_against "$results" --commit > /dev/null ||
      echo "warning: could not set $results against the shipped ensemble; rerun:" \
           "python -m benchmarks.oof_against $results --commit" >&2
  }
  # With CPU_PLAN_CANDIDATE, that change against the recipe shipped now, a study of its own (a reference
  # is the recipe shipped when its runs were made): benchmarks/results/nested_lodo-<shipped settings>/.
  nested() {
    local results="$repo/benchmarks/results/nested_lodo" candidate=()
    if [[ -n ${CPU_PLAN_CANDIDATE:-} ]]; then
      results="$results-$("$py" -m benchmarks.answers --slug)"
      candidate=(--candidate "$CPU_PLAN_CANDIDATE" --borrow-from "$repo/benchmarks/results/nested_lodo")
    fi
    "$py" -m benchmarks.nested_lodo "${dry[@]}" --commit --results "$results" --runs "$runs/nested_lodo" \
      "${candidate[@]}" "${common[@]}"
  }
  # The shipped recipe's 5-fold ensemble with each domain left out in turn (TUPAC16 first), scored on it
  # as it ships (benchmarks/lodo_ensemble.py): 5 folds of 10 (TUPAC16 out) to 29 minutes a domain, each
  # fold's record committed as it lands, the domain started only if its folds left end by the deadline.
  lodo_ensemble() {
    local answer slug column value minutes out results finished cmd
    answer=$("$py" -m benchmarks.answers)
    while IFS=$'\t' read -r slug column value minutes; do
      out="$runs/lodo_ensemble/$slug"
      results="$repo/benchmarks/results/lodo_ensemble/$slug"
      # shellcheck disable=SC2206  # the answers' words are overrides without spaces
      cmd=("$py" -m training.ensemble --config "$base" --folds 5 --out "$out" $answer "data.lodo_column=$column"
           "data.lodo_value=$value" run.progress=false "${common[@]}")
      if [[ -f $results/ensemble_report.json ]]; then
        echo "lodo-ensemble $slug: done ($results)"
        continue
      fi
      finished=$( (compgen -G "$out/fold-*/summary.json" || true) | wc -l)
      if [[ ${#dry[@]} -gt 0 ]]; then
        echo "lodo-ensemble $slug: $finished of 5 folds done"
        echo "  ${cmd[*]}"
        continue
      fi
      train_folds "$out" "$results" "lodo-ensemble $slug" "$minutes" "${cmd[@]}"
    done < <("$py" -m benchmarks.lodo_ensemble --domains)
  }
  for stage in "${stages[@]}"; do
    case $stage in
      attention-imbalance) choices attention imbalance ;;
      alignment) choices alignment ;;
      crop | backbone | stain) studies "$stage" ;;
      lodo) lodo ;;
      candidate) candidate ;;
      ensemble) ensemble ;;
      nested) nested ;;
      lodo-ensemble) lodo_ensemble ;;
    esac
  done
  echo "$(date -u +%FT%TZ) queue done"
}

main "$@"; exit
