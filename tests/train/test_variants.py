"""Training variants: single stage with bf16 autocast (Table 2 row f), and the Base CNN model."""

from __future__ import annotations

import csv
import math

import torch

from tests.train.conftest import IMAGE_SIZE, tiny_model_cfg, tiny_train_cfg
from uar.checkpoint import load_checkpoint
from uar.config import preset
from uar.decoding import greedy
from uar.train import train
from uar.train.data import batch_inputs, collate, make_dataset


def test_single_stage_bf16_has_every_loss_from_the_first_step(tiny_data, tiny_visual_tokenizer, tmp_path):
    cfg = tiny_train_cfg(two_stage=False, bf16=True, epochs_stage1=1, epochs_stage2=1)
    best = train(tiny_data, tmp_path, tiny_model_cfg(), cfg, visual_tokenizer_path=tiny_visual_tokenizer,
                 progress=False)  # fmt: skip
    steps = list(csv.DictReader((tmp_path / "steps.csv").open()))
    assert len(steps) == 4 and {r["stage"] for r in steps} == {"2"}  # 2 epochs x 2 steps, all stage 2
    assert all(math.isfinite(float(r["loss"])) for r in steps)
    assert float(steps[0]["mask"]) > 0 and float(steps[0]["global"]) > 0
    assert not (tmp_path / "stage1_best.safetensors").exists()
    ckpt = load_checkpoint(best)
    assert (
        ckpt.model.stage == 2 and ckpt.meta["train_config"].bf16 and not ckpt.meta["train_config"].two_stage
    )


def test_base_cnn_trains_on_images(tiny_data, tmp_path):
    model_cfg = preset("base", tiny_model_cfg(image_size=IMAGE_SIZE))
    best = train(tiny_data, tmp_path, model_cfg, tiny_train_cfg(epochs_stage1=1, epochs_stage2=0),
                 visual_tokenizer_path=None, progress=False)  # fmt: skip
    ckpt = load_checkpoint(best)
    assert ckpt.visual_tokenizer is None and ckpt.cfg.visual_encoder == "cnn"
    ds = make_dataset(tiny_data, "val", dataset="iu_xray", tokenizer=ckpt.text_tokenizer, n_views=2,
                      image_size=IMAGE_SIZE, train=False)  # fmt: skip
    visual, _ = batch_inputs(collate([ds[0], ds[1]]), ckpt.cfg, None, torch.device("cpu"))
    assert visual.shape == (2, 2, 1, IMAGE_SIZE, IMAGE_SIZE)
    out = greedy(ckpt.model, visual, max_len=8)
    assert len(out) == 2 and all(len(ids) <= 8 for ids in out)
