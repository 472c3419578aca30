"""Grounding maps: where on each view the decoder looked while writing each sentence.

The decoder's text-to-image cross-attention (with the TIR bias it was trained with) is read back in
one teacher-forced pass over the generated words (:meth:`uar.model.UAR.cross_attention`). The query
that produced word ``j`` attends over the L = V x g x g visual positions (view-major, each view a g x
g grid in row-major order: the CNN encoder's 7 x 7 cells or LSU's 14 x 14 tokens). A sentence's map
combines the rows of its words by a rule:

* ``mean``: the probabilities averaged over the sentence's words, all heads and all layers;
* ``last``: the same over the last decoder layer only;
* ``contrast``: ``mean`` minus the report's average over all its words, clipped at 0 (what this
  sentence looks at more than the report as a whole; the attention every word pays to the same
  "sink" positions cancels out). A sentence with nothing above the report's average keeps ``mean``;
* ``heads``: ``mean`` over a chosen set of (layer, head) pairs only: the heads that point at the
  findings on a model's validation studies (``uar calibrate --grounding``, stored in the checkpoint;
  :func:`uar.eval.pointing.select_heads`).

A checkpoint with chosen heads uses ``heads``; one without uses :data:`DEFAULT_RULE` (benchmarks/
pointing_game.py compares the rules on held-out studies, docs/benchmarks.md). Maps are kept at grid
resolution (a few hundred floats per sentence). Shown on a view, each cell's attention is spread by a
Gaussian of standard deviation ``smoothing`` (a fraction of the view's side; :meth:`SentenceMap.field`):
a smooth map whose maximum can fall between cell centres, where two or more neighbouring cells share
the sentence's attention. The width is chosen with the heads on a model's validation studies
(:func:`uar.eval.pointing.select_grounding`, stored in the checkpoint); :data:`DEFAULT_SMOOTHING`
otherwise. The model resizes each view straight to a square (:func:`uar.data.images.resize`), so
image fractions map a grid back onto the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

Rule = Literal["mean", "last", "contrast", "heads"]
RULES: tuple[Rule, ...] = ("mean", "last", "contrast", "heads")
DEFAULT_RULE: Rule = "mean"
Head = tuple[int, int]  # (decoder layer, attention head), both 0-based
# Gaussian standard deviation of a map's cells, as a fraction of the view's side: 2 cells of LSU's
# 14 x 14 grid, the best width on the 0.3.0 model's validation studies (docs/benchmarks.md)
DEFAULT_SMOOTHING = 1 / 7
SMOOTHING_CHOICES: tuple[float, ...] = (1 / 28, 1 / 14, 3 / 28, 1 / 7, 5 / 28, 3 / 14)  # 0.5 .. 3 cells of 14
MAX_SMOOTHING = 0.5  # wider than half the view and a map no longer points anywhere
PEAK_SIZE = 256  # pixels per side of the lattice a map's maximum is looked for on when no view size is given


@dataclass(frozen=True)
class SentenceMap:
    """One sentence of a report and where the decoder looked while writing it."""

    sentence: str  # the readable sentence, as it appears in the report's findings
    span: tuple[int, int]  # [start, stop) positions of its words in the report's token ids
    grids: np.ndarray  # (V, g, g) float32 >= 0, summing to 1 over all views
    smoothing: float = DEFAULT_SMOOTHING  # Gaussian standard deviation, fraction of the view's side

    def share(self, view: int) -> float:
        """Fraction of the sentence's attention on ``view`` (0 = frontal, 1 = lateral)."""
        return float(self.grids[view].sum())

    def field(self, view: int, shape: tuple[int, int]) -> np.ndarray:
        """The map of ``view`` at the pixel centres of an image of ``shape`` = (rows, columns):
        sum over cells of the cell's attention times a Gaussian of standard deviation ``smoothing``
        (in each axis a fraction of that axis's length) around the cell's centre. float64 >= 0."""
        grid = self.grids[view].astype(np.float64)
        rows = _kernel(shape[0], grid.shape[0], self.smoothing)  # (H, g)
        cols = _kernel(shape[1], grid.shape[1], self.smoothing)  # (W, g)
        return rows @ grid @ cols.T  # (H, W)

    def peak(self, view: int, shape: tuple[int, int] = (PEAK_SIZE, PEAK_SIZE)) -> tuple[float, float]:
        """The maximum of the map of ``view`` as (column, row) in [0, 1] image fractions: the centre
        of the highest pixel of :meth:`field` on an image of ``shape`` (rows, columns)."""
        f = self.field(view, shape)
        row, col = np.unravel_index(int(np.argmax(f)), f.shape)
        return float((col + 0.5) / shape[1]), float((row + 0.5) / shape[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: sentence, span, smoothing, per view its share and peak, the grids (5 decimals)."""
        views = range(self.grids.shape[0])
        return {
            "sentence": self.sentence,
            "span": list(self.span),
            "smoothing": self.smoothing,
            "share": [round(self.share(v), 5) for v in views],
            "peak": [list(self.peak(v)) for v in views],
            "grids": np.round(self.grids.astype(np.float64), 5).tolist(),
        }

    def upsampled(self, view: int, shape: tuple[int, int]) -> np.ndarray:
        """:meth:`field` of ``view`` on ``shape`` = (rows, columns), float32 in [0, 1], scaled so that
        the sentence's maximum over all views is 1."""
        fields = [self.field(v, shape) for v in range(self.grids.shape[0])]
        top = max(float(f.max()) for f in fields)
        out = fields[view] / top if top > 0 else fields[view]
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def check_smoothing(value: object) -> float:
    """``value`` as a map smoothing (a number in (0, :data:`MAX_SMOOTHING`] of the view's side);
    raises ``ValueError`` otherwise (also for a bool, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SMOOTHING:
        raise ValueError(
            f"grounding smoothing must be in (0, {MAX_SMOOTHING}] of the view's side, got {value!r}"
        )
    return float(value)


@lru_cache(maxsize=64)
def _kernel(pixels: int, cells: int, sigma: float) -> np.ndarray:
    """(pixels, cells) Gaussian weights of each cell's centre at each pixel centre along one axis,
    positions and ``sigma`` in fractions of the axis (read-only)."""
    if pixels < 1 or cells < 1:
        raise ValueError(f"need at least one pixel and one cell, got {pixels} and {cells}")
    check_smoothing(sigma)
    at = (np.arange(pixels) + 0.5) / pixels
    centres = (np.arange(cells) + 0.5) / cells
    k = np.exp(-0.5 * ((at[:, None] - centres[None, :]) / sigma) ** 2)
    k.setflags(write=False)
    return k


def sentence_spans(token_ids: Sequence[int], period_id: int) -> list[tuple[int, int]]:
    """Word spans [start, stop) of the sentences of ``token_ids``, each without its full stop."""
    spans: list[tuple[int, int]] = []
    start = 0
    for j, tok in enumerate(token_ids):
        if tok == period_id:
            if j > start:
                spans.append((start, j))
            start = j + 1
    if start < len(token_ids):
        spans.append((start, len(token_ids)))
    return spans


def combine(
    attention: Tensor,
    spans: Sequence[tuple[int, int]],
    n_views: int,
    rule: Rule,
    heads: Sequence[Head] | None = None,
) -> list[np.ndarray]:
    """Per-sentence grids (V, g, g) from one report's cross-attention (layers, H, T, L).

    Row ``j`` of ``attention`` is the query that produced word ``j`` of the report (row 0 = bos ->
    first word), so span (s, e) uses rows s..e-1. ``heads`` (rule ``heads`` only): the (layer, head)
    pairs to average.
    """
    if rule not in RULES:
        raise ValueError(f"unknown grounding rule {rule!r}; expected one of {', '.join(RULES)}")
    if rule == "heads":
        if not heads:
            raise ValueError("the heads rule needs the (layer, head) pairs to average")
        n_layers, n_heads = attention.shape[:2]
        bad = [h for h in heads if not (0 <= h[0] < n_layers and 0 <= h[1] < n_heads)]
        if bad:
            raise ValueError(f"heads {bad} are not in a {n_layers}-layer, {n_heads}-head decoder")
        per_word = torch.stack([attention[layer, head] for layer, head in heads]).mean(dim=0)  # (T, L)
    else:
        layers = attention[-1:] if rule == "last" else attention
        per_word = layers.mean(dim=(0, 1))  # (T, L)
    n_words = max(max((e for _, e in spans), default=0), 1)
    report = per_word[:n_words].mean(dim=0)  # (L,)
    l_len = per_word.shape[1]
    g = math.isqrt(l_len // n_views)
    if g * g * n_views != l_len:
        raise ValueError(f"{l_len} visual positions are not {n_views} square grids")
    grids = []
    for s, e in spans:
        m = per_word[s:e].mean(dim=0)  # (L,)
        if rule == "contrast":
            above = (m - report).clamp(min=0.0)
            if float(above.sum()) > 0:
                m = above
        m = m / m.sum().clamp(min=1e-12)
        grids.append(m.view(n_views, g, g).detach().float().numpy())
    return grids
