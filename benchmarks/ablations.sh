#!/usr/bin/env bash
# UAR against Base and the main ablations (uar-paper.md Table 2) on the synthetic data of
# scripts/train-default.sh, every model with the same budget (epochs, batch, size, seed), then one
# comparison table on the held-out synthetic test set (seed 2, 600 cases). Results: docs/benchmarks.md.
#
#   bash scripts/train-default.sh          # data, tokenizer, the default row
#   bash benchmarks/ablations.sh           # the other rows, two trainings at a time, then the table
#
# Variables as in scripts/train-default.sh (RUN, EPOCHS1, EPOCHS2); PARALLEL [2] trainings at once,
# each with one CPU thread. Finished rows are not trained again (resumed with more EPOCHS2 they continue).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/default}
EPOCHS1=${EPOCHS1:-4}
EPOCHS2=${EPOCHS2:-2}
PARALLEL=${PARALLEL:-2}
UAR=${UAR:-.venv/bin/uar}
export OMP_NUM_THREADS=1
# shellcheck source=scripts/train-common.sh
source scripts/train-common.sh
[ -f "$RUN/tokenizer.safetensors" ] || { echo "run scripts/train-default.sh first" >&2; exit 2; }

rows=("uar uar" "base base" "no-lsu no-lsu" "no-cra no-cra" "no-tir no-tir" "single-stage uar --single-stage")
running=0
for row in "${rows[@]}"; do
  # shellcheck disable=SC2086
  train_row $row &
  running=$((running + 1))
  if [ "$running" -ge "$PARALLEL" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

checkpoints=()
for row in "${rows[@]}"; do
  checkpoints+=("$RUN/ablations/${row%% *}/best.safetensors")
done
"$UAR" evaluate --checkpoint "${checkpoints[0]}" --compare "${checkpoints[@]:1}" --data "$RUN/test" \
  --split test --out "$RUN/ablations.json"
