"""Report decoding: batched beam search and greedy search over :class:`uar.model.UAR`.

Beam search follows R2GenCMN's defaults (uar-paper.md §2.5, open decision 13): beam 3, max length
60 (IU-Xray) / 100 (MIMIC-CXR), trigram blocking as R2GenCMN implements it (each repeat of a trigram
already in the beam costs ``2 ln(1/2)`` of log-probability, not a hard ban, so legitimate repeats
such as "there is no" stay possible), no length penalty. A beam that emits eos (id 0), or reaches
``max_len``, is set aside as finished; the result is the finished beam with the highest summed
log-probability. The search stops early once no live beam can beat the best finished one (scores only
decrease), which never changes the result.

Beams are folded into the batch (row ``b * beam_size + j``); with ``use_cache=True`` each step runs
the decoder on one token per row against cached keys/values (:class:`uar.modules.transformer.KVCache`),
with ``use_cache=False`` the whole prefix is recomputed every step (same result, for tests and the
speed comparison).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from uar.model import UAR

TRIGRAM_PENALTY = 2.0 * math.log(0.5)  # R2GenCMN: ln(1/2) * alpha with alpha = 2


@contextmanager
def _eval_mode(model: UAR) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def trigram_counts(seq: Tensor, vocab_size: int) -> Tensor:
    """How often each next word would repeat a trigram already in ``seq`` (R, t) -> (R, V) float.

    A trigram (a, b, c) of the sequence counts for word c when the sequence ends with (a, b).
    """
    if seq.shape[1] < 3:
        return torch.zeros(seq.shape[0], vocab_size, device=seq.device)
    match = (seq[:, :-2] == seq[:, -2:-1]) & (seq[:, 1:-1] == seq[:, -1:])  # (R, t-2)
    counts = torch.zeros(seq.shape[0], vocab_size, device=seq.device)
    return counts.scatter_add_(1, seq[:, 2:], match.float())


def _trim(ids: list[int]) -> list[int]:
    return ids[: ids.index(0)] if 0 in ids else ids


def beam_search(
    model: UAR,
    visual: Tensor,
    beam_size: int = 3,
    max_len: int | None = None,
    block_trigrams: bool = True,
    use_cache: bool = True,
    min_len: int = 0,
) -> list[list[int]]:
    """Beam search for a batch of studies; returns one word-id list per study (no bos/eos).

    Args:
        model: a :class:`UAR` (put in eval mode for the call, restored afterwards).
        visual: token ids (B, V, L) or images (B, V, 1, S, S), as :meth:`UAR.forward`.
        beam_size: beams per study.
        max_len: most words per report (default ``model.cfg.max_len``).
        block_trigrams: R2GenCMN's repeated-trigram penalty.
        use_cache: reuse past keys/values (True) or recompute the whole prefix each step (False).
        min_len: eos is forbidden before this many words (benchmarks force full-length reports).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    max_len = max_len or model.cfg.max_len
    with _eval_mode(model):
        b, k, v = visual.shape[0], beam_size, model.cfg.vocab_size
        state = model.init_decoding(visual, k, max_len, use_cache=use_cache)
        device = state.memory.device
        prefix = torch.zeros(b * k, 1, dtype=torch.long, device=device)  # (R, 1) bos
        scores = torch.full((b, k), -math.inf, device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        best_score = torch.full((b,), -math.inf, device=device)
        best: list[list[int]] = [[] for _ in range(b)]
        study_rows = torch.arange(b, device=device).unsqueeze(1) * k  # (B, 1)
        for t in range(max_len):
            logp = model.decode_step(state, prefix)  # (R, V)
            if block_trigrams:
                logp = logp + TRIGRAM_PENALTY * trigram_counts(prefix[:, 1:], v)
            if t < min_len:
                logp[:, 0] = -math.inf
            top, flat = (scores.reshape(-1, 1) + logp).view(b, k * v).topk(k, dim=1)  # (B, K)
            rows = (study_rows + flat // v).view(-1)  # (R,) parent row of each new beam
            words = flat % v  # (B, K)
            prefix = torch.cat([prefix[rows], words.view(-1, 1)], dim=1)  # (R, t+2)
            state.reorder(rows)
            finished = (words == 0) if t < max_len - 1 else torch.ones_like(words, dtype=torch.bool)
            done_score, done_beam = top.masked_fill(~finished, -math.inf).max(dim=1)  # (B,)
            for i in torch.nonzero(done_score > best_score).flatten().tolist():
                best_score[i] = done_score[i]
                best[i] = prefix[i * k + int(done_beam[i]), 1:].tolist()
            scores = top.masked_fill(finished, -math.inf)
            if bool((scores.max(dim=1).values <= best_score).all()):
                break
        return [_trim(ids) for ids in best]


def greedy(
    model: UAR, visual: Tensor, max_len: int | None = None, use_cache: bool = True, min_len: int = 0
) -> list[list[int]]:
    """Greedy decoding (argmax each step) for a batch of studies; one word-id list per study."""
    max_len = max_len or model.cfg.max_len
    with _eval_mode(model):
        b = visual.shape[0]
        state = model.init_decoding(visual, 1, max_len, use_cache=use_cache)
        prefix = torch.zeros(b, 1, dtype=torch.long, device=state.memory.device)  # (B, 1) bos
        done = torch.zeros(b, dtype=torch.bool, device=prefix.device)
        for t in range(max_len):
            logp = model.decode_step(state, prefix)  # (B, V)
            if t < min_len:
                logp[:, 0] = -math.inf
            words = logp.argmax(dim=1).masked_fill(done, 0)  # (B,)
            prefix = torch.cat([prefix, words.unsqueeze(1)], dim=1)
            done |= words == 0
            if bool(done.all()):
                break
        return [_trim(ids) for ids in prefix[:, 1:].tolist()]
