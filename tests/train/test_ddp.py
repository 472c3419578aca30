"""Two CPU processes (gloo on a free loopback port) give the single-process gradients.

Each rank joins the group through :func:`uar.train.ddp.init_distributed` from the environment
torchrun would set, takes its half of the global batch from :class:`ResumableSampler`, and runs
:func:`uar.train.trainer.train_step` on the DDP-wrapped model (SGD with lr 0, so the averaged
gradients stay on the parameters). The reference is one process on the combined batch.

L_CE is a token mean and L_Global uses in-batch negatives, so the test uses reports of one length and
``global_loss=False``: then the full-batch loss is exactly the mean of the per-rank losses.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.conftest import free_port
from uar.config import UARConfig
from uar.model import UAR
from uar.train.ddp import ResumableSampler, cleanup_distributed, init_distributed, wrap_model
from uar.train.trainer import train_step

CFG = UARConfig(
    vocab_size=40,
    max_len=10,
    n_views=2,
    tokens_per_view=16,
    visual_vocab_size=64,
    d_model=32,
    n_heads=4,
    d_ff=64,
    n_enc_layers=1,
    n_dec_layers=1,
    n_basis=64,
    dropout=0.0,
    global_loss=False,
)
N, BATCH = 12, 8  # dataset size, global batch


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    visual = torch.randint(0, CFG.visual_vocab_size, (N, CFG.n_views, CFG.tokens_per_view), generator=g)
    reports = torch.randint(2, CFG.vocab_size, (N, CFG.max_len + 2), generator=g)  # (N, T+1)
    reports[:, 0] = 0
    reports[:, -1] = 0
    return visual, reports


def _grads(rank: int, world: int, stage: int) -> dict[str, torch.Tensor]:
    info = init_distributed(prefer_cuda=False)
    assert (info.rank, info.world_size) == (rank, world)
    torch.manual_seed(1234 + rank)  # different init per rank: DDP must broadcast rank 0's weights
    model = UAR(CFG)
    ddp = wrap_model(model, info)
    sampler = ResumableSampler(list(range(N)), seed=5, rank=rank, world_size=world)
    sampler.start_epoch(0)
    idx = list(sampler)[: BATCH // world]
    visual, reports = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = train_step(ddp, visual[idx], reports[idx], stage, opt, grad_clip=0.0, bf16=False)
    assert losses["loss"] > 0
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world)}
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for stage in (1, 2):  # a fresh model (and DDP wrapper) per stage
            torch.save(_grads(rank, world, stage), Path(out) / f"stage{stage}_grads{rank}.pt")
    finally:
        cleanup_distributed()


def test_two_process_gradients_match_single_process(tmp_path, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for stage in (1, 2):
        ranks = [torch.load(tmp_path / f"stage{stage}_grads{r}.pt") for r in range(2)]
        torch.manual_seed(1234)  # rank 0's initial weights
        single = _grads(0, 1, stage)
        assert set(ranks[0]) == set(single)
        assert ("tir.m" in single) == (stage == 2)
        for name, g in single.items():
            torch.testing.assert_close(ranks[0][name], g, rtol=1e-4, atol=1e-6, msg=name)
            assert torch.equal(ranks[0][name], ranks[1][name]), name
