"""``uar train`` ends by calibrating the input-domain check of best.safetensors (docs/ood.md)."""

from __future__ import annotations

import json

from tests.train.conftest import tiny_model_cfg, tiny_train_cfg
from uar.checkpoint import load_checkpoint, read_metadata
from uar.train import train


def test_training_writes_the_input_check_from_train_and_val(tiny_data, tiny_visual_tokenizer, tmp_path):
    best = train(
        tiny_data,
        tmp_path / "run",
        tiny_model_cfg(visual_encoder="cnn", image_size=32),
        tiny_train_cfg(epochs_stage1=1, epochs_stage2=1),
        visual_tokenizer_path=None,
        progress=False,
    )
    meta = json.loads(read_metadata(best)["input_check"])
    assert meta["n_reference"] == 8 and meta["n_calibration"] == 4  # the train and val splits
    check = load_checkpoint(best).input_check
    assert check is not None and check.mean.shape == (2, 48) and check.threshold > 0
