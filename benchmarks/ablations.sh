#!/usr/bin/env bash
# UAR against Base and the main ablations (uar-paper.md Table 2) on the synthetic data of
# scripts/train-default.sh, on the held-out synthetic test set (seed 2, 600 cases); docs/benchmarks.md.
#   1. every row with the same short budget (EPOCHS1 + EPOCHS2_SHORT epochs) -> RUN/ablations.json;
#   2. Base continued to the default model's long budget (EPOCHS1 + EPOCHS2), final-epoch weights of
#      both -> RUN/long.json.
#
#   bash scripts/train-default.sh          # data, tokenizer, the default model (short, then long)
#   bash benchmarks/ablations.sh           # the other rows, two trainings at a time, then the tables
#
# Variables as in scripts/train-default.sh (RUN, EPOCHS1, EPOCHS2_SHORT, EPOCHS2); PARALLEL [2]
# trainings at once, each with one CPU thread. Finished rows are not trained again.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/default}
PARALLEL=${PARALLEL:-2}
UAR=${UAR:-.venv/bin/uar}
export OMP_NUM_THREADS=1
# shellcheck source=scripts/train-common.sh
source scripts/train-common.sh
[ -f "$RUN/tokenizer.safetensors" ] || { echo "run scripts/train-default.sh first" >&2; exit 2; }

# 1. every row with the short budget (EPOCHS1 + EPOCHS2_SHORT epochs), then one table
# (UAR - TIR is the lsu+cra row: the presets no-tir and lsu+cra are the same model)
rows=("uar uar" "base base" "base+lsu base+lsu" "base+integration base+integration" "base+global base+global"
  "base+cra base+cra" "lsu+cra lsu+cra" "no-lsu no-lsu" "no-cra no-cra" "single-stage uar --single-stage")
running=0
for row in "${rows[@]}"; do
  read -r name preset flags <<< "$row"
  # shellcheck disable=SC2086
  train_row "$RUN/ablations" "$name" "$preset" "$EPOCHS2_SHORT" $flags &
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
[ -f "$RUN/ablations.json" ] ||
  "$UAR" evaluate --checkpoint "${checkpoints[0]}" --compare "${checkpoints[@]:1}" --data "$RUN/test" \
    --split test --out "$RUN/ablations.json"

# 2. the default model's long budget for Base and UAR without LSU too (the default's own long run:
#    scripts/train-default.sh)
long_row base base
long_row no-lsu no-lsu
"$UAR" evaluate --checkpoint "$RUN/long/uar/final.safetensors" \
  --compare "$RUN/long/no-lsu/final.safetensors" "$RUN/long/base/final.safetensors" \
  --data "$RUN/test" --split test --out "$RUN/long.json"
