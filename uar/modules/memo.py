"""A bounded memo of per-token results that depend only on (position, token id), kept across calls.

Decoding aligns one word per beam and step: F^(R) = CRA(E^(R)) (uar-paper.md Eq. 7-9). CRA is
token-wise and E^(R) of a word is its embedding plus its position's, so for given weights the aligned
embedding of word ``w`` at position ``t`` is a pure function of ``(t, w)``. Reports repeat their
phrases ("the heart is normal in size" opens most of them), so a generator that keeps these rows
across studies skips the basis attention and the gates for most steps: every CRA step reads the
whole projected basis (2 n d numbers) and four d x d gate matrices.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable

import torch
from torch import Tensor


def weights_signature(tensors: Iterable[Tensor]) -> tuple[tuple[int, int], ...]:
    """Storage address and in-place version of each tensor: changes when any of them is replaced or
    updated in place (an optimizer step, ``load_state_dict``, ``.to()``). Inference tensors (made
    under ``torch.inference_mode``) have no version counter; for them only replacement counts."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)


class TokenMemo:
    """Rows ``f(t, w)`` of shape (d,) keyed by ``(mode, t, w)``, valid for one ``signature``.

    ``mode`` separates results computed differently (fp32 / int8 decoding). :meth:`validate` empties
    the memo when the signature (the weights it depends on) changes; when ``capacity`` rows are held
    it is emptied too (reports use few (t, w) pairs; it refills within a few studies); ``capacity=0``
    keeps nothing (every row is computed). Safe to share between threads: a row two threads compute
    at once is stored twice, with the same value. ``hits`` and ``misses`` count looked-up rows.
    """

    def __init__(self, capacity: int = 16384) -> None:
        self.capacity = capacity
        self._rows: dict[tuple[Hashable, int, int], Tensor] = {}
        self._signature: Hashable = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def validate(self, signature: Hashable) -> None:
        """Empty the memo unless it was filled under the same ``signature``."""
        with self._lock:
            if signature != self._signature:
                self._rows.clear()
                self._signature = signature

    def __len__(self) -> int:
        return len(self._rows)

    def rows(
        self, mode: Hashable, position: int, tokens: list[int], compute: Callable[[list[int]], Tensor]
    ) -> Tensor:
        """(len(tokens), d): the row of each token at ``position``; ``compute(missing)`` gives the
        rows (m, d) of the tokens not held yet, which are then kept."""
        if self.capacity == 0:
            self.misses += len(tokens)
            return compute(tokens)
        keys = [(mode, position, w) for w in tokens]
        with self._lock:
            found = [self._rows.get(k) for k in keys]
        missing = sorted({w for w, row in zip(tokens, found, strict=True) if row is None})
        n_missing = sum(row is None for row in found)
        self.hits += len(tokens) - n_missing
        self.misses += n_missing
        if missing:
            new = dict(zip(missing, compute(missing).unbind(0), strict=True))
            with self._lock:
                if len(self._rows) + len(new) > self.capacity:
                    self._rows.clear()
                self._rows.update({(mode, position, w): row for w, row in new.items()})
            found = [row if row is not None else new[w] for w, row in zip(tokens, found, strict=True)]
        return torch.stack(found)  # type: ignore[arg-type]
