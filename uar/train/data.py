"""Datasets of a training run: layout detection, the train-split vocabulary, the visual-token cache.

``data_dir`` is either the R2Gen layout (``annotation.json`` + ``images/``; IU-Xray with two views,
MIMIC-CXR with one) or, for ``mimic_cxr``, the MIMIC-CXR-JPG layout (``mimic-cxr-2.0.0-split.csv``,
``-metadata.csv``, ``files/``). LSU models read visual token ids from a
:class:`~uar.data.r2gen.VisualTokenCache` kept in the run folder (computed once with the frozen
visual tokenizer: the full view for validation and a fixed set of crops for training); the Base CNN
reads images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from uar.config import UARConfig
from uar.data.r2gen import Batch, R2GenDataset, ReportDataset, VisualTokenCache, collate
from uar.text.tokenizer import UNK_ID, TextTokenizer

__all__ = [
    "RunData",
    "batch_inputs",
    "check_noise_share",
    "collate",
    "layout",
    "load_run_data",
    "make_dataset",
    "noisy_tokens",
    "noisy_words",
]

DEFAULT_THRESHOLD = {"iu_xray": 3, "mimic_cxr": 10}


def layout(data_dir: Path, dataset: str) -> str:
    """``"r2gen"`` or ``"mimic_jpg"``: which on-disk layout ``data_dir`` has."""
    if (data_dir / "annotation.json").is_file():
        return "r2gen"
    if dataset == "mimic_cxr" and any(
        (data_dir / f"mimic-cxr-2.0.0-split.csv{gz}").is_file() for gz in ("", ".gz")
    ):
        return "mimic_jpg"
    expected = "annotation.json" + (" or mimic-cxr-2.0.0-split.csv" if dataset == "mimic_cxr" else "")
    raise FileNotFoundError(f"{data_dir}: no {expected}; see docs/training.md for the dataset layouts")


def make_dataset(
    data_dir: str | Path,
    split: str,
    *,
    dataset: str,
    tokenizer: TextTokenizer,
    n_views: int,
    image_size: int,
    train: bool,
    token_cache: VisualTokenCache | None = None,
    seed: int = 0,
) -> ReportDataset:
    """One split of ``data_dir`` as a :class:`~uar.data.r2gen.ReportDataset` (items are ``Study``)."""
    data_dir = Path(data_dir)
    if layout(data_dir, dataset) == "r2gen":
        return R2GenDataset(data_dir, split, tokenizer, n_views, image_size, train, token_cache, seed=seed)
    from uar.data.mimic import MimicCxrJpgDataset

    if n_views != 1:
        raise ValueError("MIMIC-CXR-JPG has one (frontal) view per item; use n_views=1")
    return MimicCxrJpgDataset(data_dir, split, tokenizer, image_size, train, token_cache, seed=seed)


@dataclass
class RunData:
    """The datasets and tokenizer of one run."""

    train: ReportDataset
    val: ReportDataset
    text_tokenizer: TextTokenizer


def load_run_data(
    data_dir: Path,
    *,
    dataset: str,
    n_views: int,
    image_size: int,
    max_len: int,
    threshold: int | None,
    augment: bool,
    punctuation: bool = False,
    seed: int,
    text_tokenizer: TextTokenizer | None = None,
    token_cache: VisualTokenCache | None = None,
) -> RunData:
    """Build the train / val datasets and (unless given, e.g. on resume) the text tokenizer.

    The vocabulary comes from the cleaned training-split reports only, keeping words with
    ``count >= threshold`` (default 3 IU-Xray, 10 MIMIC-CXR); ``punctuation`` keeps commas as tokens.
    """
    bootstrap = text_tokenizer or TextTokenizer([], threshold=1, max_len=max_len, dataset=dataset)
    common = dict(
        dataset=dataset, tokenizer=bootstrap, n_views=n_views, image_size=image_size, token_cache=token_cache
    )
    train_ds = make_dataset(data_dir, "train", train=augment, seed=seed, **common)
    val_ds = make_dataset(data_dir, "val", train=False, seed=seed, **common)
    if text_tokenizer is None:
        text_tokenizer = TextTokenizer.build(
            (TextTokenizer.clean_for(dataset, r.report, punctuation) for r in train_ds.records),
            threshold=DEFAULT_THRESHOLD[dataset] if threshold is None else threshold,
            max_len=max_len,
            dataset=dataset,
            punctuation=punctuation,
        )
        train_ds.tokenizer = val_ds.tokenizer = text_tokenizer
    return RunData(train_ds, val_ds, text_tokenizer)


def check_noise_share(kind: str, share: float) -> None:
    """Raise ``ValueError`` unless ``share`` (of the ``kind`` noise: token, word) is in [0, 1)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"{kind} noise share must be in [0, 1), got {share}")


def noisy_tokens(ids: torch.Tensor, share: float, n_codes: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of visual token ids ``(B, V, L)`` with each id replaced, with probability ``share``, by
    a code drawn uniformly from ``0..n_codes-1`` (training-time augmentation of LSU's input)."""
    check_noise_share("token", share)
    if ids.is_floating_point():
        raise ValueError("token noise applies to visual token ids, not to images")
    if share == 0.0:
        return ids
    replace = torch.rand(ids.shape, generator=generator) < share
    random_ids = torch.randint(0, n_codes, ids.shape, generator=generator)
    return torch.where(replace.to(ids.device), random_ids.to(ids.device), ids)


def noisy_words(reports: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Decoder inputs from report ids ``(B, T+1)`` = [bos, w1..wn, eos, pad...]: each word w1..wn
    replaced by ``<unk>`` with probability ``share`` (word dropout, Bowman et al. 2016); bos, eos
    and padding are kept."""
    check_noise_share("word", share)
    if share == 0.0:
        return reports
    words = reports > UNK_ID  # w1..wn (pad, bos and eos are 0; an <unk> stays <unk>)
    drop = (torch.rand(reports.shape, generator=generator) < share).to(reports.device) & words
    return reports.masked_fill(drop, UNK_ID)


def batch_inputs(
    batch: Batch, cfg: UARConfig, visual_tok: nn.Module | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(visual, reports)`` on ``device``: token ids ``(B, V, L)`` for LSU, images for the CNN.

    Batches of images for an LSU model (no token cache) are tokenised here with ``visual_tok``.
    """
    visual = batch.visual.to(device, non_blocking=True)
    if visual.is_floating_point() and cfg.visual_encoder == "lsu":
        if visual_tok is None:
            raise ValueError("an LSU model needs a visual tokenizer to turn images into token ids")
        b, v = visual.shape[:2]
        tok_device = next(visual_tok.parameters()).device
        visual = visual_tok.encode(visual.flatten(0, 1).to(tok_device)).view(b, v, -1).to(device)  # (B, V, L)
    return visual, batch.reports.to(device, non_blocking=True)
