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
resolution (a few hundred floats per sentence) and upsampled to the view's pixels on demand; the
model resizes each view straight to a square (:func:`uar.data.images.resize`), so a plain bilinear
stretch maps a grid back onto the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Rule = Literal["mean", "last", "contrast", "heads"]
RULES: tuple[Rule, ...] = ("mean", "last", "contrast", "heads")
DEFAULT_RULE: Rule = "mean"
Head = tuple[int, int]  # (decoder layer, attention head), both 0-based


@dataclass(frozen=True)
class SentenceMap:
    """One sentence of a report and where the decoder looked while writing it."""

    sentence: str  # the readable sentence, as it appears in the report's findings
    span: tuple[int, int]  # [start, stop) positions of its words in the report's token ids
    grids: np.ndarray  # (V, g, g) float32 >= 0, summing to 1 over all views

    def share(self, view: int) -> float:
        """Fraction of the sentence's attention on ``view`` (0 = frontal, 1 = lateral)."""
        return float(self.grids[view].sum())

    def peak(self, view: int) -> tuple[float, float]:
        """The map's maximum on ``view`` as (column, row) in [0, 1] image fractions.

        The highest cell, refined along each axis by the vertex of the parabola through it and its
        two neighbours (:func:`sub_cell_offset`): two equally weighted neighbouring cells put the
        maximum on their common edge, in the middle of the plateau the upsampled map shows, instead
        of on one cell's centre. A 14 x 14 grid has no cell centre on the image's midline, so
        without this no map could point at a midline structure narrower than half a cell.
        """
        grid = self.grids[view].astype(np.float64)
        rows, cols = grid.shape
        row, col = (int(i) for i in np.unravel_index(int(np.argmax(grid)), grid.shape))
        x = (col + 0.5 + sub_cell_offset(grid[row], col)) / cols
        y = (row + 0.5 + sub_cell_offset(grid[:, col], row)) / rows
        return float(x), float(y)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: sentence, span, per view its share and peak, and the grids (5 decimals)."""
        views = range(self.grids.shape[0])
        return {
            "sentence": self.sentence,
            "span": list(self.span),
            "share": [round(self.share(v), 5) for v in views],
            "peak": [list(self.peak(v)) for v in views],
            "grids": np.round(self.grids.astype(np.float64), 5).tolist(),
        }

    def upsampled(self, view: int, shape: tuple[int, int]) -> np.ndarray:
        """The map of ``view`` stretched bilinearly to ``shape`` = (rows, columns) of the image,
        float32 in [0, 1], 1 at the sentence's maximum over all views."""
        top = float(self.grids.max())
        grid = torch.from_numpy(self.grids[view] / top if top > 0 else self.grids[view])[None, None]
        up = F.interpolate(grid.float(), size=shape, mode="bilinear", align_corners=False)
        return up[0, 0].clamp_(0.0, 1.0).numpy()


def sub_cell_offset(line: np.ndarray, i: int) -> float:
    """Offset in cells, within [-0.5, 0.5], of the vertex of the parabola through ``line[i - 1]``,
    ``line[i]`` and ``line[i + 1]`` (``line[i]`` a maximum); 0 at either end of the line or when the
    three values are equal."""
    if i == 0 or i == len(line) - 1:
        return 0.0
    left, centre, right = float(line[i - 1]), float(line[i]), float(line[i + 1])
    curvature = left - 2 * centre + right  # <= 0 at a maximum
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


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
