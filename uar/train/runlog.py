"""Run logs: CSV files (default) or TensorBoard event files in the run folder.

Two streams: ``steps`` (one row per logged optimisation step: losses, learning rate) and ``epochs``
(one row per epoch: mean training losses, validation metrics, seconds). CSV rows are appended, so a
resumed run continues the same files. Only rank 0 creates a logger.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

STEP_FIELDS = ("stage", "epoch", "step", "global_step", "loss", "ce", "global", "mask", "lr")
EPOCH_FIELDS = (
    "stage",
    "epoch",
    "global_step",
    "train_loss",
    "train_ce",
    "train_global",
    "train_mask",
    "lr",
    "seconds",
    "val_seconds",
    "val_bleu_4",
    "val_bleu_1",
    "val_meteor",
    "val_rouge_l",
    "val_cider",
    "best_bleu_4",
    "val_ce_micro_f1",
    "best_ce_micro_f1",
)


class LoggerUnavailableError(RuntimeError):
    """The requested log format needs a package that is not installed."""


class RunLogger:
    """Append-only metric log for one training run.

    ``kind="csv"`` writes ``steps.csv`` and ``epochs.csv``; ``kind="tensorboard"`` writes event files
    under ``tensorboard/`` and needs the ``tensorboard`` package (``pip install tensorboard``).
    """

    def __init__(self, run_dir: Path, kind: Literal["csv", "tensorboard"] = "csv") -> None:
        self.kind = kind
        self.run_dir = Path(run_dir)
        self._tb: Any = None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise LoggerUnavailableError(
                    "log='tensorboard' needs the tensorboard package (pip install tensorboard); "
                    "use log='csv' (the default) otherwise"
                ) from exc
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        elif kind != "csv":
            raise ValueError(f"unknown log kind {kind!r}; use 'csv' or 'tensorboard'")

    def step(self, row: dict[str, Any]) -> None:
        """Log one optimisation step (keys from :data:`STEP_FIELDS`)."""
        self._write("steps", STEP_FIELDS, row, x=int(row["global_step"]))

    def epoch(self, row: dict[str, Any]) -> None:
        """Log one finished epoch (keys from :data:`EPOCH_FIELDS`; missing values left blank)."""
        self._write("epochs", EPOCH_FIELDS, row, x=int(row["global_step"]))

    def _write(self, name: str, fields: tuple[str, ...], row: dict[str, Any], x: int) -> None:
        unknown = set(row) - set(fields)
        if unknown:
            raise ValueError(f"unknown {name} log fields: {sorted(unknown)}")
        if self._tb is not None:
            for key, value in row.items():
                if key not in ("stage", "epoch", "step", "global_step") and value is not None:
                    self._tb.add_scalar(f"{name}/{key}", float(value), x)
            self._tb.flush()
            return
        path = self.run_dir / f"{name}.csv"
        new = not path.exists()
        if not new:  # a file from an older version keeps its columns
            with path.open(newline="") as f:
                fields = tuple(next(csv.reader(f), fields))
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in fields})

    def close(self) -> None:
        """Flush and close TensorBoard files (CSV files are closed after every row)."""
        if self._tb is not None:
            self._tb.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
