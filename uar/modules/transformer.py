"""The 3-layer Transformer encoder-decoder of UAR (uar-paper.md §2.1, §2.5).

Pre-LN residual blocks with a final LayerNorm, as in R2GenCMN (``x + dropout(sublayer(norm(x)))``).
The decoder's cross-attention takes the TIR bias. Decoding one step at a time uses a
:class:`KVCache`: the self-attention keys/values of past steps are kept in a preallocated buffer and
the memory's cross-attention keys/values are projected once (:meth:`Decoder.memory_kv`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from uar.modules.attention import Linear, MultiHeadAttention


class FeedForward(nn.Module):
    """Position-wise Linear(d, d_ff) -> ReLU -> dropout -> Linear(d_ff, d)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), Linear(d_ff, d_model))

    def forward(self, x: Tensor) -> Tensor:
        """(..., d) -> (..., d)."""
        return self.net(x)


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each ``x + dropout(f(LayerNorm(x)))``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, d) -> (B, L, d)."""
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h))
        return x + self.drop(self.ff(self.norm2(x)))


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer` and a final LayerNorm: (B, L, d) -> (B, L, d)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, d) -> (B, L, d)."""
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class KVCache:
    """Self-attention keys/values of every decoder layer for up to ``max_len`` steps.

    ``kv`` is one preallocated tensor (max_len, n_layers, 2, R, H, d_k), time-major so that the
    steps written so far are one contiguous block: step ``t`` writes ``kv[t]`` (:meth:`append`), and
    :meth:`reorder` (beam search) gathers the rows of that block only into a second buffer and swaps
    the two, so no memory is allocated per step.
    """

    def __init__(
        self, n_layers: int, batch: int, n_heads: int, max_len: int, d_k: int, *, like: Tensor
    ) -> None:
        shape = (max_len, n_layers, 2, batch, n_heads, d_k)
        self.kv = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.spare = torch.empty_like(self.kv)
        self.length = 0

    @property
    def max_len(self) -> int:
        """Most steps the cache holds."""
        return self.kv.shape[0]

    def append(self, layer: int, kv: Tensor) -> None:
        """Write step ``length`` of ``layer``: kv (R, 2, H, d_k), the step's keys and values."""
        self.kv[self.length, layer].copy_(kv.transpose(0, 1))

    def past(self, layer: int) -> tuple[Tensor, Tensor]:
        """Keys and values of steps ``0..length`` of ``layer`` (after :meth:`append`): (R, H, t+1, d_k)
        each."""
        kv = self.kv[: self.length + 1, layer].permute(1, 2, 3, 0, 4)  # (2, R, H, t+1, d_k), a view
        return kv[0], kv[1]

    def reorder(self, rows: Tensor) -> None:
        """Keep batch rows ``rows`` (R,) (a row may appear several times), in that order."""
        n = self.length
        torch.index_select(self.kv[:n], 3, rows, out=self.spare[:n])
        self.kv, self.spare = self.spare, self.kv


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the memory (with the TIR bias), feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mem_kv: tuple[Tensor, Tensor],
        *,
        causal: Tensor,
        cross_bias: Tensor | None,
        record: list[Tensor] | None = None,
    ) -> Tensor:
        """Whole sequence: x (B, T, d), projected memory (B, H, L, d_k) x2, causal (T, T) bool,
        cross_bias (T, L) or None -> (B, T, d). ``record``: the cross-attention probabilities
        (B, H, T, L) are appended to it (grounding maps, :mod:`uar.grounding`)."""
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, mask=causal))
        q = self.cross_attn.project_q(self.norm2(x))
        if record is not None:
            record.append(self.cross_attn.weights(q, mem_kv[0], bias=cross_bias))
        x = x + self.drop(self.cross_attn.attend_heads(q, *mem_kv, bias=cross_bias))
        return x + self.drop(self.ff(self.norm3(x)))

    def step(
        self,
        x: Tensor,
        cache: KVCache,
        layer: int,
        mem_kv: tuple[Tensor, Tensor],
        cross_bias: Tensor | None,
    ) -> Tensor:
        """One decoding step (inference: no dropout): x (R, 1, d) at position ``cache.length`` -> (R, 1, d).

        ``mem_kv`` holds the projected memory of the B studies, (B, H, L, d_k) x2, with R = B * beams
        rows ordered study-major; ``cross_bias`` is (1, L).
        """
        h = self.norm1(x)
        qkv = self.self_attn.in_proj(h)  # (R, 1, 3d): this step's query, key and value
        rows, d = qkv.shape[0], qkv.shape[2] // 3
        heads, d_k = self.self_attn.n_heads, self.self_attn.d_k
        cache.append(layer, qkv[:, 0, d:].view(rows, 2, heads, d_k))
        q = self.self_attn.split_heads(qkv[:, :, :d])  # (R, H, 1, d_k)
        x = x + self.self_attn.attend_heads(q, *cache.past(layer))
        q = self.cross_attn.project_q(self.norm2(x))  # (R, H, 1, d_k), R = B * beams
        b = mem_kv[0].shape[0]
        # the beams of one study share its memory: they are that study's queries, so the memory's
        # keys/values are never repeated per beam
        q = q.view(b, rows // b, heads, d_k).transpose(1, 2)  # (B, H, beams, d_k)
        out = self.cross_attn.attend_heads(q, *mem_kv, bias=cross_bias)  # (B, beams, d)
        x = x + out.reshape(rows, 1, -1)
        return x + self.ff(self.norm3(x))


class Decoder(nn.Module):
    """A stack of :class:`DecoderLayer` and a final LayerNorm."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def memory_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Cross-attention keys/values of the encoder output (B, L, d), per layer (B, H, L, d_k) x2."""
        return [layer.cross_attn.project_kv(memory) for layer in self.layers]

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        cross_bias: Tensor | None = None,
        record: list[Tensor] | None = None,
    ) -> Tensor:
        """Teacher-forced / uncached: x (B, T, d), memory (B, L, d), cross_bias (T, L) -> (B, T, d).
        ``record`` collects each layer's cross-attention probabilities (B, H, T, L), first layer first."""
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # (T, T)
        for layer, mem_kv in zip(self.layers, self.memory_kv(memory), strict=True):
            x = layer(x, mem_kv, causal=causal, cross_bias=cross_bias, record=record)
        return self.norm(x)

    def new_cache(self, batch: int, max_len: int, like: Tensor) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` rows and ``max_len`` steps."""
        layer = self.layers[0].self_attn
        return KVCache(len(self.layers), batch, self.n_heads, max_len, layer.d_k, like=like)

    def step(
        self,
        x: Tensor,
        cache: KVCache,
        mem_kv: list[tuple[Tensor, Tensor]],
        cross_bias: Tensor | None = None,
    ) -> Tensor:
        """Cached step: x (R, 1, d) at position ``cache.length``, projected memory of B studies
        (:meth:`memory_kv`), cross_bias (1, L) -> (R, 1, d); R = B * beams, study-major."""
        if cache.length >= cache.max_len:
            raise ValueError(f"KV cache is full ({cache.max_len} steps)")
        for i, (layer, kv) in enumerate(zip(self.layers, mem_kv, strict=True)):
            x = layer.step(x, cache, i, kv, cross_bias)
        cache.length += 1
        return self.norm(x)
