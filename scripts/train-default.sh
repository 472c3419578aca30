#!/usr/bin/env bash
# Train the embedded default model (docs/model-card.md): synthetic radiographs whose reports reuse
# IU-Xray report sentences, then the default variant, exported in fp16 to
# uar/default_model/uar-default.safetensors with its metrics on a held-out synthetic test set.
#
#   make train-default                       # about 3.5 h on 2 CPU cores (full UAR, 20000 studies)
#   RUN=/data/runs/default PRESET=uar make train-default
#
# Every step is skipped when its output exists, so an interrupted run continues where it stopped
# (training resumes from its last.pt). Variables (defaults in brackets):
#   RUN [runs/default]   work folder       CORPUS [../shared/data/iu_xray/annotation.json]
#   N_TRAIN [20000]      synthetic studies of the run (seed 1), split by SPLITS [0.985,0.015,0] into
#                        train / val (19700 / 300; for full UAR 10000 studies beat 5000 by +0.034 CE
#                        micro-F1, 20000 beat 10000 by +0.006 micro / +0.031 macro, docs/benchmarks.md)
#   N_TEST [600]         held-out test cases (seed 2, never trained on)
#   PRESET [uar]         model variant: full UAR (LSU on the semantic tokenizer's codes + CRA + TIR);
#                        no-lsu = CRA + TIR on the CNN encoder (the 0.2.0 default)
#   MODEL_VERSION [0.5.0] version stored in the shipped model (and in every SR it writes)
#   INIT_VISUAL [codebook] W_I initialisation of LSU rows: codebook (code vectors) or random (Xavier)
#   CODEBOOK [8192]      codes of the semantic tokenizer
#   EPOCHS1 [4] / EPOCHS2 [10]  stage-1 / stage-2 epochs (the first EPOCHS2_SHORT [2] of stage 2 are
#                        the ablation table's budget: scripts/train-common.sh)     THREADS [2] CPU threads
#   AVERAGE [3]          ship the mean of the last AVERAGE stage-2 epochs (1: the last epoch alone)
# benchmarks/ablations.sh trains the other rows with the same budget into the same RUN folder.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/default}
CORPUS=${CORPUS:-../shared/data/iu_xray/annotation.json}
N_TRAIN=${N_TRAIN:-20000}
SPLITS=${SPLITS:-0.985,0.015,0}
N_TEST=${N_TEST:-600}
PRESET=${PRESET:-uar}
THREADS=${THREADS:-2}
UAR=${UAR:-.venv/bin/uar}
OUT=${OUT:-uar/default_model/uar-default.safetensors}
MODEL_VERSION=${MODEL_VERSION:-0.5.0}
export OMP_NUM_THREADS=$THREADS
# shellcheck source=scripts/train-common.sh
source scripts/train-common.sh

[ -f "$CORPUS" ] || { echo "report corpus $CORPUS not found (set CORPUS=annotation.json)" >&2; exit 2; }
mkdir -p "$RUN/ablations"
[ -f "$RUN/data/annotation.json" ] ||
  "$UAR" data synthetic --n "$N_TRAIN" --seed 1 --splits "$SPLITS" --corpus "$CORPUS" --out "$RUN/data"
# the semantic tokenizer: 8192 k-means codes of the frozen trunk's features of the first 1200
# training studies (2400 views, 470k feature vectors of which 400k are clustered; 4096 and 8192 codes beat 1024,
# 8192 wrote the better text, docs/benchmarks.md)
[ -f "$RUN/tokenizer.safetensors" ] ||
  "$UAR" tokenizer train --kind semantic --images "$RUN/data/annotation.json" --out "$RUN/tokenizer.safetensors" \
    --codebook "${CODEBOOK:-8192}" --max-images 2400

long_row "$PRESET" "$PRESET"
# the held-out test set, made only now: training never sees it
[ -f "$RUN/test/annotation.json" ] ||
  "$UAR" data synthetic --n "$N_TEST" --seed 2 --splits 0,0,1 --corpus "$CORPUS" --out "$RUN/test"
model="$RUN/long/$PRESET"
[ -f "$model-test.json" ] ||
  "$UAR" evaluate --checkpoint "$model/final.safetensors" --data "$RUN/test" --split test --out "$model-test.json"
# LSU models read their training views' token ids from the run's cache for the input check
cache=()
[[ "$CNN_PRESETS" == *" $PRESET "* ]] || cache=(--token-cache "$RUN/visual_tokens.safetensors")
"$UAR" export "$model/final.safetensors" "$OUT" --fp16 --name uar-default --version "$MODEL_VERSION" \
  --metrics "$model-test.json" --calibration-data "$RUN/data" "${cache[@]}"
# the decoder heads of the grounding maps, chosen on validation studies (docs/grounding.md)
"$UAR" calibrate "$OUT" --grounding "$RUN/data"
