#!/usr/bin/env bash
# Every run behind docs/results.md, then the report. Runs resume, so rerunning this after an
# interruption redoes only what is missing; a finished run is not run again.
#   bash experiments/run_results.sh            # about 1.5 hours on a 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
for variant in FIF FIE FNF FNE EIF EIE ENF ENE; do
  "$PYTHON" train.py --config configs/results-builtin.yaml --variant "$variant" \
    --output-dir "runs/results/builtin-$variant"
done
for variant in $("$PYTHON" experiments/report.py --best 2 runs/results); do
  "$PYTHON" train.py --config configs/results-s_nq.yaml --variant "$variant" \
    --output-dir "runs/results/s_nq-$variant"
done
"$PYTHON" experiments/report.py runs/results
