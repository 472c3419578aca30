"""UAR training: two stages, exact resume, CSV / TensorBoard logs, DDP through ``torchrun``.

Public entry point: :func:`uar.train.trainer.train` (re-exported here). Command line: ``uar train``.
"""

from uar.train.trainer import train

__all__ = ["train"]
