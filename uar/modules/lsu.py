"""Latent Space Unifier (uar-paper.md §2.2): both modalities as embedded discrete tokens.

Visual token ids from the frozen visual tokenizer are embedded with ``W_I`` (|V_I| x d), report
words with ``W_R`` (|V_R| x d). Both get sinusoidal positions; visual tokens also get a learned
view embedding (frontal / lateral), and each view restarts its positions at 0 (open decision 2).
Embeddings are scaled by sqrt(d) before the positions are added, as in R2GenCMN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """Sinusoidal position table (n, d) of Vaswani et al. (sin on even, cos on odd channels)."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)  # (n, 1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))  # (d/2,)
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: d // 2])
    return table


class VisualPositions(nn.Module):
    """Adds per-view sinusoidal positions and a learned view embedding to a (B, V*L, d) sequence."""

    def __init__(self, d_model: int, n_views: int, tokens_per_view: int) -> None:
        super().__init__()
        self.n_views = n_views
        self.tokens_per_view = tokens_per_view
        self.view_embed = nn.Embedding(n_views, d_model)
        pos = sinusoidal_positions(tokens_per_view, d_model)  # (L, d)
        self.register_buffer("pos", pos.repeat(n_views, 1), persistent=False)  # (V*L, d)
        self.register_buffer(
            "view_ids", torch.arange(n_views).repeat_interleave(tokens_per_view), persistent=False
        )  # (V*L,)

    def forward(self, x: Tensor) -> Tensor:
        """(B, V*L, d) -> (B, V*L, d)."""
        if x.shape[1] != self.pos.shape[0]:
            raise ValueError(
                f"expected {self.n_views} views x {self.tokens_per_view} tokens = {self.pos.shape[0]}"
                f" visual positions, got {x.shape[1]}"
            )
        return x + self.pos + self.view_embed(self.view_ids)


class LSU(nn.Module):
    """Token embeddings of both modalities (Eqs. 1, 6): ``E^(I) = W_I[ids] + pos + view``,
    ``E^(R) = W_R[ids] + pos``."""

    def __init__(
        self,
        visual_vocab_size: int,
        vocab_size: int,
        d_model: int,
        n_views: int,
        tokens_per_view: int,
        max_text_len: int,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.visual_embed = nn.Embedding(visual_vocab_size, d_model)  # W_I
        self.visual_pos = VisualPositions(d_model, n_views, tokens_per_view)
        self.word_embed = WordEmbedding(vocab_size, d_model, max_text_len)  # W_R
        nn.init.xavier_uniform_(self.visual_embed.weight)

    @torch.no_grad()
    def init_visual_from_codes(self, codes: Tensor) -> None:
        """Initialise ``W_I`` from the visual tokenizer's code vectors ``(K, C)`` instead of Xavier.

        The codes go through a random semi-orthogonal map ``(C, d)`` (it keeps their angles and
        distances when ``C <= d``) and are scaled to the Xavier initialisation's standard deviation,
        so that similar codes start with similar embeddings at the usual magnitude.
        """
        k, c = codes.shape
        if k != self.visual_embed.num_embeddings:
            raise ValueError(f"{k} code vectors for a {self.visual_embed.num_embeddings}-token W_I")
        q, _ = torch.linalg.qr(torch.randn(max(c, self.d_model), min(c, self.d_model)))
        proj = q if c >= self.d_model else q.t()  # (C, d), orthonormal columns or rows
        w = codes.float() @ proj  # (K, d)
        w = w - w.mean()
        target_std = math.sqrt(2.0 / (k + self.d_model))  # std of xavier_uniform_
        self.visual_embed.weight.copy_(w * (target_std / w.std().clamp_min(1e-12)))

    def embed_visual(self, ids: Tensor) -> Tensor:
        """Visual token ids (B, V, L) -> E^(I) (B, V*L, d)."""
        b = ids.shape[0]
        x = self.visual_embed(ids.reshape(b, -1)) * math.sqrt(self.d_model)  # (B, V*L, d)
        return self.visual_pos(x)

    def embed_words(self, ids: Tensor, start: int = 0) -> Tensor:
        """Word ids (B, T) at positions ``start..start+T-1`` -> E^(R) (B, T, d)."""
        return self.word_embed(ids, start)


class WordEmbedding(nn.Module):
    """``W_R`` lookup scaled by sqrt(d) plus sinusoidal positions (shared by LSU and the Base model)."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.xavier_uniform_(self.embed.weight)
        self.register_buffer("pos", sinusoidal_positions(max_len, d_model), persistent=False)  # (T_max, d)

    def forward(self, ids: Tensor, start: int = 0) -> Tensor:
        """Word ids (B, T) at positions ``start..start+T-1`` -> (B, T, d)."""
        t = ids.shape[1]
        if start + t > self.pos.shape[0]:
            raise ValueError(f"report positions up to {start + t} exceed the maximum {self.pos.shape[0]}")
        return self.embed(ids) * math.sqrt(self.d_model) + self.pos[start : start + t]
