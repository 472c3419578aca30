"""Data order (ResumableSampler), run logs and the stage plan: the pieces exact resume relies on."""

from __future__ import annotations

import csv
import importlib.util

import pytest
import torch
from torch.utils.data import DataLoader

from uar.config import TrainConfig
from uar.train.ddp import ResumableSampler
from uar.train.runlog import RunLogger
from uar.train.trainer import stage_plan


def _batches(sampler: ResumableSampler, epoch: int, per_rank: int, start: int = 0) -> list[list[int]]:
    sampler.start_epoch(epoch, start_index=start)
    return [b.tolist() for b in DataLoader(list(range(23)), batch_size=per_rank, sampler=sampler)]


def test_ranks_together_see_the_single_process_batches():
    data = list(range(23))
    single = ResumableSampler(data, seed=5)
    ranks = [ResumableSampler(data, seed=5, rank=r, world_size=2) for r in range(2)]
    for epoch in range(3):
        full = _batches(single, epoch, per_rank=8)
        parts = [_batches(s, epoch, per_rank=4) for s in ranks]
        # DistributedSampler pads 23 -> 24 items; the first two global batches match exactly.
        for j in range(2):
            assert sorted(parts[0][j] + parts[1][j]) == sorted(full[j])
        assert sorted(i for b in full for i in b) == data


def test_mid_epoch_and_epoch_boundary_resume_replays_the_same_order():
    data = list(range(23))
    straight = ResumableSampler(data, seed=11)
    order = [_batches(straight, e, per_rank=4) for e in range(3)]
    assert order[0] != order[1]  # a new permutation every epoch

    # Stop after 2 batches of epoch 1, restore into a fresh sampler, finish the epoch.
    s = ResumableSampler(data, seed=11)
    _batches(s, 0, per_rank=4)
    _batches(s, 1, per_rank=4)
    saved = s.state_dict()
    resumed = ResumableSampler(data, seed=999)
    resumed.load_state_dict(saved, mid_epoch=True)
    assert _batches(resumed, 1, per_rank=4, start=2 * 4) == order[1][2:]
    assert _batches(resumed, 2, per_rank=4) == order[2]

    # Stop at the end of epoch 1: the next epoch is epoch 2's order, not epoch 1's again.
    at_end = ResumableSampler(data, seed=999)
    at_end.load_state_dict(saved, mid_epoch=False)
    assert _batches(at_end, 2, per_rank=4) == order[2]


def test_csv_log_appends_rows(tmp_path):
    logger = RunLogger(tmp_path, "csv")
    logger.step({"stage": 1, "epoch": 0, "step": 1, "global_step": 1, "loss": 2.5, "ce": 2.0, "lr": 5e-4})
    logger.epoch({"stage": 1, "epoch": 0, "global_step": 1, "seconds": 1.25, "val_bleu_4": 0.125})
    logger.close()
    RunLogger(tmp_path, "csv").step({"stage": 1, "epoch": 0, "step": 2, "global_step": 2, "loss": 2.0})
    steps = list(csv.DictReader((tmp_path / "steps.csv").open()))
    assert [r["global_step"] for r in steps] == ["1", "2"]
    assert steps[0]["mask"] == "" and float(steps[0]["loss"]) == 2.5
    epochs = list(csv.DictReader((tmp_path / "epochs.csv").open()))
    assert float(epochs[0]["seconds"]) == 1.25 and float(epochs[0]["val_bleu_4"]) == 0.125
    with pytest.raises(ValueError, match="unknown steps log fields"):
        logger.step({"global_step": 3, "accuracy": 1.0})


def test_tensorboard_log_or_clear_error(tmp_path):
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(RuntimeError, match="pip install tensorboard"):
            RunLogger(tmp_path, "tensorboard")
    else:
        logger = RunLogger(tmp_path, "tensorboard")
        logger.step({"stage": 1, "epoch": 0, "step": 1, "global_step": 1, "loss": 1.0})
        logger.close()
        assert any((tmp_path / "tensorboard").iterdir())


def test_stage_plan():
    assert stage_plan(TrainConfig(epochs_stage1=4, epochs_stage2=2)) == [(1, 4), (2, 2)]
    assert stage_plan(TrainConfig(epochs_stage1=4, epochs_stage2=2, two_stage=False)) == [(2, 6)]


def test_generator_state_is_a_tensor_snapshot():
    s = ResumableSampler(list(range(5)), seed=1)
    s.start_epoch(0)
    state = s.state_dict()
    assert isinstance(state["epoch_start"], torch.Tensor) and not torch.equal(
        state["epoch_start"], state["after_draw"]
    )
