"""Exact resume: N steps straight equal N/2 steps, stop, resume, N/2 more (torch.equal weights).

The split falls in the middle of an epoch of stage 1 and the run then crosses the stage boundary,
so the data order, dropout RNG, AdamW/StepLR state and the stage-2 initialisation from the best
stage-1 weights all have to be restored exactly.
"""

from __future__ import annotations

import csv

import pytest
import torch

from tests.train.conftest import tiny_model_cfg, tiny_train_cfg
from uar.checkpoint import load_checkpoint
from uar.cli import main
from uar.train import train

# 8 studies, batch 4 -> 2 steps per epoch; stage 1 = 2 epochs, stage 2 = 1 epoch -> 6 steps in all.
TOTAL_STEPS = 6
SPLIT = 3  # mid-epoch (epoch 2 of stage 1, after its first batch)


def _run(data, tok, out, **kw):
    return train(
        data, out, tiny_model_cfg(), tiny_train_cfg(), visual_tokenizer_path=tok, progress=False, **kw
    )


def test_resume_mid_epoch_is_bit_identical(tiny_data, tiny_visual_tokenizer, tmp_path):
    straight = tmp_path / "straight"
    _run(tiny_data, tiny_visual_tokenizer, straight)

    split = tmp_path / "split"
    _run(tiny_data, tiny_visual_tokenizer, split, max_steps=SPLIT)
    state = torch.load(split / "last.pt", weights_only=False)
    assert state["progress"]["global_step"] == SPLIT
    assert (state["progress"]["stage"], state["progress"]["epoch"], state["progress"]["step_in_epoch"]) == (
        1,
        1,
        1,
    )
    with pytest.raises(ValueError, match="already holds a run"):
        _run(tiny_data, tiny_visual_tokenizer, split)  # a fresh run never overwrites a stopped one
    best = _run(tiny_data, tiny_visual_tokenizer, split, resume=True)

    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(split / "last.pt", weights_only=False)
    assert a["progress"]["global_step"] == b["progress"]["global_step"] == TOTAL_STEPS
    assert a["progress"]["finished"] and b["progress"]["finished"]
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert int(a["model"]["stage_id"]) == 2
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        for pid, pstate in a["optimizer"]["state"].items():
            assert torch.equal(pstate[k], b["optimizer"]["state"][pid][k])
    assert a["progress"]["best_score"] == b["progress"]["best_score"]

    # the same best model was selected, and the logs record every epoch with its seconds
    ca, cb = load_checkpoint(straight / "best.safetensors"), load_checkpoint(best)
    for name, t in ca.model.state_dict().items():
        assert torch.equal(t, cb.model.state_dict()[name]), name
    epochs = list(csv.DictReader((split / "epochs.csv").open()))
    assert [(r["stage"], r["epoch"]) for r in epochs] == [("1", "0"), ("1", "1"), ("2", "0")]
    assert all(float(r["seconds"]) > 0 and r["val_bleu_4"] != "" for r in epochs)
    assert (split / "stage1_best.safetensors").is_file()


def test_resume_extends_a_finished_run(tiny_data, tiny_visual_tokenizer, tmp_path):
    """A finished run resumed with more stage-2 epochs continues exactly as if planned from the start."""

    def run(out, epochs2, **kw):
        return train(
            tiny_data,
            out,
            tiny_model_cfg(),
            tiny_train_cfg(epochs_stage2=epochs2),
            visual_tokenizer_path=tiny_visual_tokenizer,
            progress=False,
            **kw,
        )

    straight, extended = tmp_path / "straight", tmp_path / "extended"
    run(straight, 2)
    run(extended, 1)
    assert torch.load(extended / "last.pt", weights_only=False)["progress"]["finished"]
    run(extended, 2, resume=True)

    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(extended / "last.pt", weights_only=False)
    assert a["progress"]["global_step"] == b["progress"]["global_step"] == TOTAL_STEPS + 2
    assert b["progress"]["finished"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    epochs = list(csv.DictReader((extended / "epochs.csv").open()))
    assert [(r["stage"], r["epoch"]) for r in epochs] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]

    # `uar export --weights-from last.pt` ships the final-epoch weights with the run's tokenizers
    shipped = tmp_path / "final.safetensors"
    assert main(["export", str(extended / "best.safetensors"), str(shipped), "--weights-from",
                 str(extended / "last.pt")]) == 0  # fmt: skip
    final = load_checkpoint(shipped)
    for name, t in final.model.state_dict().items():
        assert torch.equal(t, b["model"][name]), name
    other = tmp_path / "other"
    train(tiny_data, other, tiny_model_cfg(d_model=16), tiny_train_cfg(epochs_stage1=1, epochs_stage2=0),
          visual_tokenizer_path=tiny_visual_tokenizer, progress=False)  # fmt: skip
    assert main(["export", str(extended / "best.safetensors"), str(tmp_path / "x.safetensors"),
                 "--weights-from", str(other / "last.pt")]) == 2  # fmt: skip


def test_keep_epochs_writes_every_epoch_for_averaging(tiny_data, tiny_visual_tokenizer, tmp_path):
    """``keep_epochs`` writes each epoch's weights; the last is the run's final model, and `uar export
    --average` ships their mean."""
    out = tmp_path / "run"
    train(tiny_data, out, tiny_model_cfg(), tiny_train_cfg(epochs_stage2=2, keep_epochs=True),
          visual_tokenizer_path=tiny_visual_tokenizer, progress=False)  # fmt: skip
    names = sorted(p.name for p in (out / "epochs").iterdir())
    assert names == [
        "stage1-epoch01.safetensors", "stage1-epoch02.safetensors",
        "stage2-epoch01.safetensors", "stage2-epoch02.safetensors",
    ]  # fmt: skip
    last = torch.load(out / "last.pt", weights_only=False)["model"]
    epoch2 = load_checkpoint(out / "epochs" / "stage2-epoch02.safetensors")
    assert epoch2.meta["metrics"]["epoch"] == 2 and epoch2.meta["metrics"]["stage"] == 2
    for name, t in epoch2.model.state_dict().items():
        assert torch.equal(t, last[name]), name
    kept = [out / "epochs" / f"stage2-epoch0{i}.safetensors" for i in (1, 2)]
    averaged = tmp_path / "averaged.safetensors"
    assert main(["export", str(out / "best.safetensors"), str(averaged), "--average", *map(str, kept)]) == 0
    states = [load_checkpoint(p).model.state_dict() for p in kept]
    for name, t in load_checkpoint(averaged).model.state_dict().items():
        if t.is_floating_point():
            assert torch.allclose(t, (states[0][name] + states[1][name]) / 2, atol=1e-6), name
