"""Multi-head attention with an optional additive logit bias (TIR) and reusable keys/values.

The logits are ``(Q K^T + bias) / sqrt(d_k)`` (uar-paper.md §2.4: the TIR mask is added *before*
the division by the per-head width ``d_k``), followed by a full softmax over the keys. Keys and
values are projected separately from the queries so that callers can keep them: the decoder's
key/value cache (:mod:`uar.modules.transformer`) appends one step at a time, and the projected
memory / CRA basis are computed once per generation.

Decoding steps (a few rows: one token per beam) stream every weight matrix once per step, so their
speed is bounded by memory traffic. Inference-only measures apply to them: :func:`linear`'s
weight-major product; contiguous copies of the long key/value sets that every step re-reads (the CRA
basis, the encoder memory), made once per generation; and, inside :func:`int8_decoding`, an int8 copy
of each :class:`Linear` weight (per-output-row scales, bf16 activations; a quarter of the fp32
traffic) with those key/value copies in bf16 (half the traffic).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uar.modules.memo import weights_signature

SMALL_ROWS = 8  # inputs with at most this many rows take the weight-major product in `linear`
SMALL_QUERIES = 8  # attention with at most this many queries per head uses explicit matmuls
LARGE_KEYS = 256  # under int8 decoding, key/value sets at least this long are read as bf16 copies


@dataclass(frozen=True)
class Int8Weight:
    """A weight (d_out, d_in) as int8 with one bf16 scale per output row: ``W ~= w * scale[:, None]``."""

    w: Tensor  # (d_out, d_in) int8
    scale: Tensor  # (d_out,) bfloat16

    @classmethod
    def quantize(cls, weight: Tensor) -> Int8Weight:
        """Symmetric per-row quantisation of ``weight`` (d_out, d_in); round to nearest."""
        scale = weight.detach().abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (d_out,)
        w = torch.round(weight.detach() / scale.unsqueeze(1)).clamp_(-127, 127).to(torch.int8)
        return cls(w.contiguous(), scale.to(torch.bfloat16))

    def rows(self, start: int, stop: int) -> Int8Weight:
        """The output rows ``start:stop`` (e.g. the W_Q block of a fused projection)."""
        return Int8Weight(self.w[start:stop], self.scale[start:stop])


INT8_MATMUL = hasattr(torch, "_weight_int8pack_mm")  # PyTorch's int8-weight CPU kernel
_INT8_DECODING: contextvars.ContextVar[bool] = contextvars.ContextVar("uar_int8_decoding", default=False)


@contextmanager
def int8_decoding(enabled: bool = True) -> Iterator[None]:
    """Within the block (this thread / task only), few-row :class:`Linear` products without autograd
    read int8 copies of the weights (see :func:`linear`) and long key/value sets are read as bf16
    copies; training and many-row products (the encoder) stay fp32."""
    token = _INT8_DECODING.set(enabled)
    try:
        yield
    finally:
        _INT8_DECODING.reset(token)


def int8_decoding_enabled() -> bool:
    """Whether this thread is inside :func:`int8_decoding`."""
    return _INT8_DECODING.get()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, int8: Int8Weight | None = None) -> Tensor:
    """``x @ weight^T + bias`` for x (..., d_in), weight (d_out, d_in) -> (..., d_out).

    With at most :data:`SMALL_ROWS` rows (a decoding step: one token per beam) it is computed as
    ``(weight @ x^T)^T``: CPU BLAS kernels stream the weight far better with it as the left matrix
    (measured 2x faster on one core and up to 10x on two for 3 rows x 512 x 512); the result is the
    same product. With ``int8`` (a quantised copy of ``weight``) and no autograd, those few-row
    products read the int8 copy instead, with the activations rounded to bf16 (3x faster again on
    this machine; relative error ~1e-2 of the output's range).
    """
    rows = x.numel() // x.shape[-1]
    if rows > SMALL_ROWS:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])  # (rows, d_in)
    if int8 is not None and INT8_MATMUL and x.device.type == "cpu" and not torch.is_grad_enabled():
        out = torch._weight_int8pack_mm(flat.to(torch.bfloat16), int8.w, int8.scale)  # (rows, d_out) bf16
        if bias is not None:
            out = bias + out  # promoted to the bias' dtype
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out.view(*x.shape[:-1], weight.shape[0])
    out = torch.mm(weight, flat.T) if bias is None else torch.addmm(bias.unsqueeze(1), weight, flat.T)
    return out.T.contiguous().view(*x.shape[:-1], weight.shape[0])  # (d_out, rows) -> (..., d_out)


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` computed by :func:`linear` (fast for few-row decoding steps)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._int8: Int8Weight | None = None
        self._int8_key: tuple[tuple[int, int], ...] | None = None

    def int8(self) -> Int8Weight | None:
        """Inside :func:`int8_decoding` without autograd: the int8 copy of the current weight (made
        on first use and again after any update of the weight); otherwise ``None``."""
        if not _INT8_DECODING.get() or torch.is_grad_enabled():
            return None
        key = weights_signature((self.weight,))
        if self._int8_key != key:
            self._int8, self._int8_key = Int8Weight.quantize(self.weight), key
        return self._int8

    def forward(self, x: Tensor) -> Tensor:
        """(..., d_in) -> (..., d_out)."""
        return linear(x, self.weight, self.bias, self.int8())


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``n_heads`` heads, Q/K/V projections and an output linear.

    W_Q, W_K and W_V are the three row blocks of one ``in_proj`` linear (as in
    ``torch.nn.MultiheadAttention``), so self-attention projects all three in one matmul.

    Keys and values can be projected once with :meth:`project_kv` and reused (the cross-attention
    memory during decoding, the CRA basis); :meth:`attend` then only projects the queries.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        self.dropout = dropout
        self.d_model = d_model
        self.in_proj = Linear(d_model, 3 * d_model)  # rows: W_Q, W_K, W_V
        self.out_proj = Linear(d_model, d_model)
        self._kv_copies: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        for i in range(3):  # each of W_Q, W_K, W_V initialised as its own d x d matrix
            nn.init.xavier_uniform_(self.in_proj.weight[i * d_model : (i + 1) * d_model])

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, N, d) -> (B, H, N, d_k)."""
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.d_k).transpose(1, 2)

    def project_q(self, x: Tensor) -> Tensor:
        """Queries (B, N, d) -> (B, H, N, d_k)."""
        d = self.d_model
        packed = self.in_proj.int8()
        w, b = self.in_proj.weight, self.in_proj.bias
        return self.split_heads(linear(x, w[:d], b[:d], packed.rows(0, d) if packed is not None else None))

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``x`` (B, S, d), each (B, H, S, d_k)."""
        d = self.d_model
        k, v = linear(x, self.in_proj.weight[d:], self.in_proj.bias[d:]).split(d, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention queries, keys and values of ``x`` (B, N, d) in one matmul, each (B, H, N, d_k)."""
        q, k, v = self.in_proj(x).split(self.d_model, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def _decoding_kv(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Contiguous copies of ``k^T`` (.., d_k, S) and ``v`` (.., S, d_k) of a long key/value set, in
        bf16 under :func:`int8_decoding` and in the keys' dtype otherwise, reused while the same tensor
        objects come back: every decoding step of one generation passes the same projected memory /
        basis, which nothing modifies in place (inference tensors). The projections are column
        slices of one fused output, so without these copies every step would gather them anew."""
        dtype = torch.bfloat16 if _INT8_DECODING.get() else k.dtype
        c = self._kv_copies
        if c is None or c[0] is not k or c[1] is not v or c[2].dtype != dtype:
            c = (k, v, k.transpose(-1, -2).to(dtype).contiguous(), v.to(dtype).contiguous())
            self._kv_copies = c
        return c[2], c[3]

    def _few_queries(self, q: Tensor, kt: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
        """Attention for a few queries per head by two batched matmuls (decoding steps), in the dtype
        of ``kt`` / ``v`` with fp32 logits and softmax.

        q (B, H, N, d_k), kt (B or 1, H, d_k, S), v (B or 1, H, S, d_k), attn_mask broadcastable to
        (B, H, N, S) and already divided by sqrt(d_k) -> (B, H, N, d_k).
        """
        b, h, n, d_k = q.shape
        s = v.shape[-2]
        if kt.shape[0] != b:  # one key/value set shared by the batch
            kt, v = kt.expand(b, h, d_k, s), v.expand(b, h, s, d_k)
        q3 = q.reshape(b * h, n, d_k).to(kt.dtype)  # (B*H, N, d_k)
        logits = torch.bmm(q3, kt.reshape(b * h, d_k, s)).view(b, h, n, s)  # Q K^T
        scale = 1.0 / math.sqrt(d_k)
        # (Q K^T) / sqrt(d_k) + mask, promoted to fp32 (the mask's dtype) when kt is bf16
        logits = logits * scale if attn_mask is None else torch.add(attn_mask, logits, alpha=scale)
        probs = torch.softmax(logits, dim=-1, dtype=q.dtype).view(b * h, n, s).to(v.dtype)
        return torch.bmm(probs, v.reshape(b * h, s, d_k)).view(b, h, n, d_k).to(q.dtype)

    def weights(self, q: Tensor, k: Tensor, *, bias: Tensor | None = None) -> Tensor:
        """The attention probabilities :meth:`attend_heads` uses (no mask, no dropout), in fp32.

        q (B, H, N, d_k), k (B or 1, H, S, d_k), bias broadcastable to (B, H, N, S) -> (B, H, N, S).
        """
        logits = q.float() @ k.float().transpose(-1, -2)  # (B, H, N, S)
        if bias is not None:
            logits = logits + bias.float()
        return torch.softmax(logits / math.sqrt(self.d_k), dim=-1)

    def attend_heads(
        self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None
    ) -> Tensor:
        """Attention of projected queries over projected keys/values, merged and output-projected.

        Args:
            q: (B, H, N, d_k); k, v: (B or 1, H, S, d_k).
            mask: bool, broadcastable to (B, H, N, S); True = may attend.
            bias: additive logits broadcastable to (B, H, N, S), added before the 1/sqrt(d_k) scale.

        Returns:
            (B, N, d).
        """
        attn_mask: Tensor | None = None
        if bias is not None:
            attn_mask = bias / math.sqrt(self.d_k)
        if mask is not None:
            fill = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, -math.inf)
            attn_mask = fill if attn_mask is None else attn_mask + fill
        p = self.dropout if self.training else 0.0
        if q.shape[2] <= SMALL_QUERIES and p == 0.0:
            # decoding steps: explicit matmuls beat the fused kernel's blocking for a few queries
            if k.shape[-2] >= LARGE_KEYS and not torch.is_grad_enabled():
                kt, vv = self._decoding_kv(k, v)  # (B or 1, H, d_k, S), (B or 1, H, S, d_k)
            else:
                kt, vv = k.transpose(-1, -2), v
            out = self._few_queries(q, kt, vv, attn_mask)  # (B, H, N, d_k)
        else:
            if k.shape[0] != q.shape[0]:
                k = k.expand(q.shape[0], -1, -1, -1)
                v = v.expand(q.shape[0], -1, -1, -1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, H, N, d_k)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.n_heads * self.d_k))

    def forward(
        self, x: Tensor, kv: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None
    ) -> Tensor:
        """Attention of ``x`` (B, N, d) over ``kv`` (B, S, d) -> (B, N, d)."""
        if kv is x:
            q, k, v = self.project_qkv(x)
        else:
            q, (k, v) = self.project_q(x), self.project_kv(kv)
        return self.attend_heads(q, k, v, mask=mask, bias=bias)
