# Shared by scripts/train-default.sh and benchmarks/ablations.sh (sourced): the model size of every row,
# and the two budgets:
#   short  EPOCHS1 + EPOCHS2_SHORT epochs, every row of the ablation table (RUN/ablations/NAME);
#   long   the short run continued to EPOCHS1 + EPOCHS2 epochs (RUN/long/NAME, a copy of the short run
#          folder resumed with more stage-2 epochs), the default model and the Base it is compared with.
# train_row DIR NAME PRESET EPOCHS2 [FLAGS...] trains or resumes DIR/NAME (with the same budget a
# finished run returns at once). long_row NAME PRESET continues RUN/ablations/NAME into RUN/long/NAME.
# Every row keeps commas as tokens (--punctuation: reports read as prose, metrics score R2Gen's form);
# the rows that read visual tokens (LSU) start W_I from the semantic tokenizer's code vectors and
# train with LSU_ARGS: no encoder layers (the decoder attends to the aligned visual tokens), 15 % of
# the visual tokens and 20 % of the decoder's input words replaced by noise (docs/training.md: without
# them full UAR recalls training reports instead of reading the image).
LSU_ARGS=(--enc-layers 0 --token-noise 0.15 --word-noise 0.2)
MODEL_ARGS=(--d-model 128 --n-heads 4 --d-ff 256 --layers 3 --n-basis 512 --dropout 0 --mask-loss mean --no-augment
  --punctuation)
# presets whose visual input is the CNN encoder (no visual tokens)
CNN_PRESETS=" base no-lsu base+integration base+global base+cra "
EPOCHS1=${EPOCHS1:-4}
EPOCHS2_SHORT=${EPOCHS2_SHORT:-2}
EPOCHS2=${EPOCHS2:-10}
# the shipped weights of a long run: the mean of the last AVERAGE stage-2 epochs (3, the default
# model's recipe: chosen on 1500 fresh synthetic studies, docs/training.md) or, with AVERAGE=1, the
# last epoch's
AVERAGE=${AVERAGE:-3}

train_row() {
  local dir=$1 name=$2 preset=$3 epochs2=$4
  shift 4
  local out="$dir/$name" resume=() visual=()
  mkdir -p "$dir"
  [ -f "$out/last.pt" ] && resume=(--resume)
  [[ "$CNN_PRESETS" == *" $preset "* ]] ||
    visual=(--init-visual-embeddings "${INIT_VISUAL:-codebook}" --token-cache "$RUN/visual_tokens.safetensors"
      "${LSU_ARGS[@]}")
  "$UAR" train --data "$RUN/data" --out "$out" --tokenizer "$RUN/tokenizer.safetensors" \
    --preset "$preset" --epochs1 "$EPOCHS1" --epochs2 "$epochs2" --step-size 4 --max-val-studies 150 \
    --save-every 100 --keep-epochs --name "$name" "${MODEL_ARGS[@]}" "${visual[@]}" "${resume[@]}" "$@" >> "$out.log" 2>&1
}

long_row() {
  local name=$1 preset=$2
  train_row "$RUN/ablations" "$name" "$preset" "$EPOCHS2_SHORT"
  if [ ! -d "$RUN/long/$name" ]; then
    mkdir -p "$RUN/long"
    cp -r "$RUN/ablations/$name" "$RUN/long/$name"
  fi
  train_row "$RUN/long" "$name" "$preset" "$EPOCHS2"
  # the shipped weights: the end of the last epoch, or the mean of the last AVERAGE epochs (validation
  # BLEU or CE-F1 on 150 studies is too noisy to pick one epoch; decided before test evaluation)
  local out="$RUN/long/$name" last=()
  [ -f "$out/final.safetensors" ] && return
  if [ "$AVERAGE" -gt 1 ]; then
    mapfile -t last < <(ls "$out"/epochs/stage2-epoch*.safetensors 2> /dev/null | tail -n "$AVERAGE")
    [ "${#last[@]}" -eq "$AVERAGE" ] ||
      { echo "$out/epochs holds ${#last[@]} stage-2 epochs, fewer than AVERAGE=$AVERAGE" >&2; return 2; }
    "$UAR" export "$out/best.safetensors" "$out/final.safetensors" --average "${last[@]}"
  else
    "$UAR" export "$out/best.safetensors" "$out/final.safetensors" --weights-from "$out/last.pt"
  fi
}
