"""A tiny UAR overfits 8 studies (real IU-Xray report texts, real radiographs) to their exact reports.

End to end through :func:`uar.train.train`: vocabulary from the training split, both stages, best
checkpoint selected on validation BLEU-4 (validation = the same 8 studies), then greedy and beam
decoding of the saved checkpoint reproduce every reference token sequence.
"""

from __future__ import annotations

import torch

from tests.train.conftest import tiny_model_cfg, tiny_train_cfg, write_r2gen_dataset
from uar.checkpoint import load_checkpoint
from uar.generation import beam_search, greedy
from uar.train import train
from uar.train.data import batch_inputs, collate, make_dataset


def test_tiny_model_overfits_8_studies(shared_data, tiny_visual_tokenizer, tmp_path):
    torch.set_num_threads(1)
    data = write_r2gen_dataset(shared_data, tmp_path / "iu8", n_train=8, n_val=8)
    model_cfg = tiny_model_cfg(d_model=64, d_ff=128, dropout=0.0)
    train_cfg = tiny_train_cfg(
        batch_size=8, lr=3e-3, epochs_stage1=150, epochs_stage2=20, eval_every=50, step_size=1000,
        extra={"vocab_threshold": 1, "augment": False},
    )  # fmt: skip
    best = train(data, tmp_path / "run", model_cfg, train_cfg, visual_tokenizer_path=tiny_visual_tokenizer,
                 progress=False)  # fmt: skip

    ckpt = load_checkpoint(best)
    assert ckpt.meta["metrics"]["bleu_4"] > 0.99
    ds = make_dataset(data, "train", dataset="iu_xray", tokenizer=ckpt.text_tokenizer, n_views=2,
                      image_size=ckpt.cfg.image_size, train=False)  # fmt: skip
    batch = collate([ds[i] for i in range(len(ds))])
    visual, reports = batch_inputs(batch, ckpt.cfg, ckpt.visual_tokenizer, torch.device("cpu"))
    refs = [[i for i in r[1:] if i != 0] for r in reports.tolist()]
    assert len(refs) == 8 and all(len(r) >= 5 for r in refs)
    assert greedy(ckpt.model, visual) == refs
    assert beam_search(ckpt.model, visual, beam_size=3) == refs
