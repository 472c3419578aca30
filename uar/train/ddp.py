"""Multi-process data parallel training through ``torchrun`` (DDP).

``torchrun --nproc_per_node N -m uar train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group
(gloo on CPU, nccl on GPU). Without those variables training runs in one process and every helper
here is a cheap no-op, so the trainer has a single code path.

Data order comes from :class:`ResumableSampler`: a :class:`~torch.utils.data.DistributedSampler`
whose epoch permutation is drawn from an explicit :class:`torch.Generator` (the "data-order
generator") and which can start part-way through an epoch, so a resumed run sees exactly the
batches the interrupted run would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the (possibly single-process) job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when running under ``torchrun`` with more than zero peers."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and progress bars."""
        return self.rank == 0


def init_distributed(prefer_cuda: bool = True) -> DistInfo:
    """Join the process group described by the ``torchrun`` environment, if there is one.

    Backend: ``nccl`` when CUDA is available (one GPU per local rank), else ``gloo`` on CPU.
    Returns a single-process :class:`DistInfo` when ``WORLD_SIZE`` is unset or 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = prefer_cuda and torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ValueError(f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun")
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            device_id=device if use_cuda else None,
        )
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup_distributed() -> None:
    """Leave the process group (no-op in a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; no-op in a single process)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average a dict of scalars over ranks (for logging only)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP wrapper under torchrun, the model itself in a single process.

    Wrapping broadcasts rank 0's parameters and buffers to every rank. ``find_unused_parameters``
    is on because which parameters take part depends on the stage and the ablation switches
    (e.g. the TIR mask is idle in stage 1).
    """
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


class ResumableSampler(DistributedSampler):
    """Shuffling sampler for one rank, with an explicit data-order generator and mid-epoch start.

    Each epoch draws one permutation of the whole dataset from :attr:`generator` (the same on every
    rank, since every rank restores the same state), pads it to a multiple of ``world_size`` as
    :class:`DistributedSampler` does, and gives this rank the slice ``perm[rank::world_size]``.
    Rank ``r``'s ``j``-th batch of ``B / world_size`` items together with the other ranks' ``j``-th
    batches is exactly the single-process ``j``-th batch of ``B`` items.

    Call :meth:`start_epoch` before iterating. :meth:`state_dict` holds the generator state at the
    start of the current epoch and after its draw; with the number of batches already done (kept by
    the trainer) that is all a resumed run needs to replay the rest of an epoch or start the next.
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self._epoch_start_state = self.generator.get_state()
        self._indices: list[int] = []
        self.start_index = 0

    def start_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Draw the permutation of ``epoch`` and skip this rank's first ``start_index`` items."""
        self.set_epoch(epoch)  # informational here: the order comes from self.generator
        self._epoch_start_state = self.generator.get_state()
        perm = torch.randperm(len(self.dataset), generator=self.generator).tolist()  # type: ignore[arg-type]
        pad = self.total_size - len(perm)
        perm += (perm * (pad // max(len(perm), 1) + 1))[:pad]
        self._indices = perm[self.rank : self.total_size : self.num_replicas]
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index

    def state_dict(self) -> dict[str, Any]:
        """Data-order generator states: at the start of the current epoch and after its draw."""
        return {"epoch_start": self._epoch_start_state, "after_draw": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], *, mid_epoch: bool) -> None:
        """Restore the data-order generator so the next :meth:`start_epoch` draws what the saved run
        would have drawn: the interrupted epoch's order again (``mid_epoch``) or the next epoch's."""
        self._epoch_start_state = state["epoch_start"]
        self.generator.set_state(state["epoch_start"] if mid_epoch else state["after_draw"])
