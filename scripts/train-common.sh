# Shared by scripts/train-default.sh and benchmarks/ablations.sh (sourced): the model size and budget
# of every row, and train_row NAME PRESET [FLAGS...], which trains or resumes RUN/ablations/NAME (a finished
# row resumed with more EPOCHS2 continues its stage 2; with the same budget it returns at once).
MODEL_ARGS=(--d-model 128 --n-heads 4 --d-ff 256 --layers 3 --n-basis 512 --dropout 0 --mask-loss mean --no-augment)

train_row() {
  local name=$1 preset=$2
  shift 2
  local out="$RUN/ablations/$name" resume=()
  [ -f "$out/last.pt" ] && resume=(--resume)
  "$UAR" train --data "$RUN/data" --out "$out" --tokenizer "$RUN/tokenizer.safetensors" \
    --preset "$preset" --epochs1 "$EPOCHS1" --epochs2 "$EPOCHS2" --step-size 4 --max-val-studies 150 \
    --save-every 100 --name "$name" "${MODEL_ARGS[@]}" "${resume[@]}" "$@" >> "$out.log" 2>&1
}
