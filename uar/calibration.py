"""Calibrate the input-domain check (:mod:`uar.ood`) of a checkpoint file on its training data, and
choose the decoder heads of its grounding maps (:mod:`uar.grounding`) on synthetic validation studies.

Used by ``uar calibrate``, ``uar export --calibration-data`` and at the end of ``uar train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from uar.checkpoint import INPUT_CHECK_KEY, read_metadata, write_grounding, write_input_check
from uar.data.r2gen import VisualTokenCache, fingerprint, image_key
from uar.eval.pointing import look, play, select_grounding
from uar.generator import ReportGenerator
from uar.ood import (
    DEFAULT_PERCENTILE,
    InputCheck,
    StudyFeatures,
    calibrate_on_dataset,
    image_features,
)

NOT_LSU = "the model reads CNN features, not visual tokens: a token cache does not apply"


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
    token_cache: VisualTokenCache | str | Path | None = None,
) -> tuple[Path, InputCheck]:
    """Fit the check of ``checkpoint``'s model on the R2Gen dataset ``data`` (train split: statistics;
    val split: threshold) and store it, in ``out`` or in place. Returns (written file, check).

    ``token_cache`` (LSU models): the visual token ids of the full views are read from this cache of
    the same data and tokenizer (a :class:`~uar.data.r2gen.VisualTokenCache` or its file, as
    training fills it) instead of running the tokenizer's trunk on every image again; the features
    are the same. Raises ``ValueError`` when the model has no visual tokenizer or the cache is of
    another one.
    """
    generator = ReportGenerator.load(checkpoint)
    if token_cache is None:
        features = image_features(generator.view_features)
    else:
        if not isinstance(token_cache, VisualTokenCache):
            if generator.visual_tokenizer is None:
                raise ValueError(NOT_LSU)
            token_cache = VisualTokenCache.open(generator.visual_tokenizer, token_cache)
        features = cached_token_features(generator, token_cache, Path(data))
    check = calibrate_on_dataset(
        features, data, percentile=percentile, max_reference=max_reference, feature=generator.check_feature
    )
    return write_input_check(checkpoint, check, out), check


def cached_token_features(
    generator: ReportGenerator, cache: VisualTokenCache, root: Path, *, batch_size: int = 64
) -> StudyFeatures:
    """Input-domain features of studies under the dataset folder ``root`` from cached token ids.

    Each view's ids are those of its full image (the inference resize, cache crop ``full``); a
    missing lateral takes the frontal's ids, as :meth:`ReportGenerator.visual_input` does with the
    image. Ids missing from the cache are computed (and kept in memory only).
    """
    tokenizer = generator.visual_tokenizer
    if tokenizer is None:
        raise ValueError(NOT_LSU)
    if cache.fingerprint != fingerprint(tokenizer):
        raise ValueError("the token cache was made with another visual tokenizer than the model's")
    n_views = generator.config.n_views

    def features(studies: Sequence[tuple[Path, ...]], desc: str) -> tuple[Tensor, Tensor]:
        feats, masks = [], []
        for start in tqdm(range(0, len(studies), batch_size), desc=desc, unit="batch", disable=None):
            chunk = studies[start : start + batch_size]
            views = [(list(paths) + [paths[0]] * n_views)[:n_views] for paths in chunk]
            ids = torch.stack(
                [torch.stack([cache.get(image_key(p, root), p, None) for p in v]) for v in views]
            )
            feats.append(generator.input_features(ids))  # ids (B, V, L) -> (B, V, c)
            mask = torch.ones(len(chunk), n_views, dtype=torch.bool)
            if n_views == 2:
                mask[:, 1] = torch.tensor([len(paths) > 1 for paths in chunk])
            masks.append(mask)
        if not feats:
            raise ValueError("no studies to compute features of")
        return torch.cat(feats), torch.cat(masks)

    return features


def choose_grounding_heads(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    *,
    split: str = "val",
    max_studies: int | None = 300,
) -> tuple[Path, dict[str, Any]]:
    """Choose the grounding heads and map smoothing of ``checkpoint`` on ``split`` of the synthetic
    set ``data`` (the pointing game, :func:`uar.eval.pointing.select_grounding`) and store them, in
    ``out`` or in place. Returns (written file, the stored grounding metadata)."""
    generator = ReportGenerator.load(checkpoint)
    looked = look(generator, data, split, max_studies=max_studies)
    heads, smoothing, rate = select_grounding(looked)
    info: dict[str, Any] = {
        "heads": [list(h) for h in heads],
        "smoothing": smoothing,
        "val_hit_rate": rate,
        "val_hit_rate_all_heads": play(looked, "mean", None, smoothing).rates()["map"],
        "val_trials": play(looked, "heads", heads, smoothing).n,
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
