#!/usr/bin/env bash
# Train the embedded default model (docs/model-card.md): synthetic radiographs whose reports reuse
# IU-Xray report sentences, our own VQ-VAE visual tokenizer, then two-stage UAR, exported in fp16 to
# uar/default_model/uar-default.safetensors and evaluated on a held-out synthetic test set.
#
#   make train-default                       # everything, about 1 h 30 min on 2 CPU cores
#   RUN=/data/runs/default make train-default
#
# Every step is skipped when its output exists, so an interrupted run continues where it stopped
# (the UAR training itself resumes from its last.pt). Variables (defaults in brackets):
#   RUN [runs/default]   work folder       CORPUS [../shared/data/iu_xray/annotation.json]
#   N_TRAIN [5000]       training cases    N_TEST [600] held-out test cases (seed 2, never trained on)
#   EPOCHS1 / EPOCHS2    UAR stage-1 / stage-2 epochs   THREADS [2] CPU threads
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/default}
CORPUS=${CORPUS:-../shared/data/iu_xray/annotation.json}
N_TRAIN=${N_TRAIN:-5000}
N_TEST=${N_TEST:-600}
EPOCHS1=${EPOCHS1:-4}
EPOCHS2=${EPOCHS2:-2}
THREADS=${THREADS:-2}
UAR=${UAR:-.venv/bin/uar}
OUT=${OUT:-uar/default_model/uar-default.safetensors}
export OMP_NUM_THREADS=$THREADS

# Model size of the default (also used by benchmarks/ablations.sh): small enough for 2 CPU cores.
MODEL_ARGS=(--d-model 128 --n-heads 4 --d-ff 256 --layers 3 --n-basis 512 --dropout 0 --mask-loss mean --no-augment)

[ -f "$CORPUS" ] || { echo "report corpus $CORPUS not found (set CORPUS=annotation.json)" >&2; exit 2; }
mkdir -p "$RUN"

[ -f "$RUN/data/annotation.json" ] ||
  "$UAR" data synthetic --n "$N_TRAIN" --seed 1 --splits 0.94,0.06,0 --corpus "$CORPUS" --out "$RUN/data"
[ -f "$RUN/test/annotation.json" ] ||
  "$UAR" data synthetic --n "$N_TEST" --seed 2 --splits 0,0,1 --corpus "$CORPUS" --out "$RUN/test"
[ -f "$RUN/tokenizer.safetensors" ] ||
  "$UAR" tokenizer train --images "$RUN/data/annotation.json" --out "$RUN/tokenizer.safetensors" \
    --codebook 1024 --epochs 4

resume=()
[ -f "$RUN/uar/last.pt" ] && resume=(--resume)
[ -f "$RUN/uar/done" ] || {
  "$UAR" train --data "$RUN/data" --out "$RUN/uar" --tokenizer "$RUN/tokenizer.safetensors" \
    --preset uar --epochs1 "$EPOCHS1" --epochs2 "$EPOCHS2" --step-size 4 --max-val-studies 150 \
    --save-every 100 --name uar-default "${MODEL_ARGS[@]}" "${resume[@]}"
  touch "$RUN/uar/done"
}

"$UAR" evaluate --checkpoint "$RUN/uar/best.safetensors" --data "$RUN/test" --split test \
  --out "$RUN/uar-test.json"
"$UAR" export "$RUN/uar/best.safetensors" "$OUT" --fp16 --name uar-default \
  --version "$(.venv/bin/python -c 'import uar; print(uar.__version__)')" --metrics "$RUN/uar-test.json"
