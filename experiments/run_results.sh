#!/usr/bin/env bash
# Every run behind docs/results.md, then the report. Runs resume, so rerunning this after an
# interruption redoes only what is missing; a finished run is not run again.
#   bash experiments/run_results.sh
# Two runs go side by side, each on one CPU thread: on a 2-core machine that is faster than one
# run after the other on two threads. Sampling in bfloat16 depends on the thread count (sums are
# split differently), so the same seed reproduces the numbers with the same OMP_NUM_THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

run_variants() {  # config prefix variant...
  local config=$1 prefix=$2
  shift 2
  for variant in "$@"; do
    "$PYTHON" train.py --config "configs/results-$config.yaml" --variant "$variant" \
      --output-dir "runs/results/$prefix-$variant"
  done
}

run_variants builtin builtin EIF ENF FIF FNF & first=$!
run_variants builtin builtin EIE ENE FIE FNE & second=$!
wait "$first"; wait "$second"
read -r -a best <<< "$("$PYTHON" experiments/report.py --best 2 runs/results)"
run_variants s_nq s_nq "${best[0]}" & first=$!
run_variants s_nq s_nq "${best[1]}" & second=$!
wait "$first"; wait "$second"
"$PYTHON" experiments/report.py runs/results
