"""Calibrate the input-domain check (:mod:`uar.ood`) of a checkpoint file on its training data, and
choose the decoder heads of its grounding maps (:mod:`uar.grounding`) on synthetic validation studies.

Used by ``uar calibrate``, ``uar export --calibration-data`` and at the end of ``uar train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uar.checkpoint import INPUT_CHECK_KEY, read_metadata, write_grounding, write_input_check
from uar.eval.pointing import look, play, select_heads
from uar.generator import ReportGenerator
from uar.ood import DEFAULT_PERCENTILE, InputCheck, calibrate_on_dataset


def has_input_check(path: str | Path) -> bool:
    """Whether the checkpoint at ``path`` holds an input-domain check."""
    return INPUT_CHECK_KEY in read_metadata(path)


def calibrate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    max_reference: int | None = None,
) -> tuple[Path, InputCheck]:
    """Fit the check of ``checkpoint``'s model on the R2Gen dataset ``data`` (train split: statistics;
    val split: threshold) and store it, in ``out`` or in place. Returns (written file, check)."""
    generator = ReportGenerator.load(checkpoint)
    check = calibrate_on_dataset(
        generator.view_features, data, percentile=percentile, max_reference=max_reference
    )
    return write_input_check(checkpoint, check, out), check


def choose_grounding_heads(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    *,
    split: str = "val",
    max_studies: int | None = 300,
) -> tuple[Path, dict[str, Any]]:
    """Choose the grounding heads of ``checkpoint`` on ``split`` of the synthetic set ``data`` (the
    pointing game, :func:`uar.eval.pointing.select_heads`) and store them, in ``out`` or in place.
    Returns (written file, the stored grounding metadata)."""
    generator = ReportGenerator.load(checkpoint)
    looked = look(generator, data, split, max_studies=max_studies)
    heads, rate = select_heads(looked)
    info: dict[str, Any] = {
        "heads": [list(h) for h in heads],
        "val_hit_rate": rate,
        "val_hit_rate_all_heads": play(looked, "mean").rates()["map"],
        "val_trials": play(looked, "heads", heads).n,
        "val_studies": len(looked),
        "data": Path(data).name,
        "split": split,
    }
    return write_grounding(checkpoint, info, out), info


def describe(check: InputCheck) -> str:
    """One line about a fitted check: threshold, percentile, data, validation quantiles."""
    q = check.calibration_quantiles
    return (
        f"input check: {check.method} on {check.feature}, threshold {check.threshold:.2f}"
        f" (p{check.percentile:g} of {check.n_calibration} validation studies; median {q['p50']:.2f},"
        f" max {q['max']:.2f}), statistics of {check.n_reference} training studies"
    )
