"""Cross-modal Representation Aligner (uar-paper.md §2.3, open decisions 4-8).

One CRA instance serves both modalities. Each embedding attends over a fixed basis ``B`` (n x d)
adjusted by learnable gain and bias, ``B^ = gamma * B + beta`` (Eq. 7); the attended result is fused
with the input by the dual gate of Eq. 9. :func:`triplet_loss` is L_Global (Eq. 10).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uar.modules.attention import Linear, MultiHeadAttention
from uar.modules.memo import weights_signature

BasisKind = Literal["orthogonal", "uniform", "normal"]
Fusion = Literal["dual_gate", "none", "addition"]


def build_basis(kind: BasisKind, n: int, d: int, *, seed: int = 0) -> Tensor:
    """The fixed CRA basis ``B`` of shape (n, d), deterministic for a given ``seed``.

    - ``"orthogonal"`` (open decision 4(a)): QR of a random Gaussian ``max(n, d) x max(n, d)`` matrix,
      keep the first ``d`` columns, so the columns are exactly orthonormal (B^T B = I_d when n >= d)
      and the rows are mutually orthogonal in expectation, with norm ~sqrt(d / n). :class:`CRA`
      multiplies this matrix by the constant :func:`row_scale` = sqrt(n / d) so that rows have norm
      ~1 (a tight frame); a uniform scale keeps the columns exactly orthogonal.
    - ``"uniform"``: i.i.d. U(-1, 1) rows, each scaled to unit norm (Table 3 alternative).
    - ``"normal"``: i.i.d. N(0, 1) rows, each scaled to unit norm (Table 3 alternative).
    """
    gen = torch.Generator().manual_seed(seed)
    if kind == "orthogonal":
        return orthonormal_columns(n, d, gen)
    if kind == "uniform":
        b = torch.rand(n, d, generator=gen, dtype=torch.float64) * 2 - 1
    elif kind == "normal":
        b = torch.randn(n, d, generator=gen, dtype=torch.float64)
    else:
        raise ValueError(f"unknown basis kind {kind!r}; expected orthogonal, uniform or normal")
    return (b / b.norm(dim=1, keepdim=True)).float()


def row_scale(kind: BasisKind, n: int, d: int) -> float:
    """Constant applied to :func:`build_basis` inside CRA so that basis rows have norm ~1."""
    return (n / d) ** 0.5 if kind == "orthogonal" and n > d else 1.0


def orthonormal_columns(n: int, d: int, gen: torch.Generator) -> Tensor:
    """(n, d) with exactly orthonormal columns (n >= d) or rows (n < d), from a QR decomposition."""
    m = max(n, d)
    q, r = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique (Haar-distributed) Q
    return q[:n, :d].float()


class DualGate(nn.Module):
    """One gate ``G(X, Y) = sigmoid(X W1 + Y W2 + b)`` (Eq. 8, with a bias; open decision 6)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.w1 = Linear(d_model, d_model)
        self.w2 = Linear(d_model, d_model, bias=False)
        nn.init.zeros_(self.w1.bias)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """(..., d), (..., d) -> gate values in (0, 1), (..., d)."""
        return torch.sigmoid(self.w1(x) + self.w2(y))


class CRA(nn.Module):
    """Basis attention + fusion, applied token-wise: (B, N, d) -> (B, N, d).

    ``fusion``: ``"dual_gate"`` F = G_I * tanh(E + F~) + G_F * E + F~ (Eq. 9); ``"none"`` F = F~;
    ``"addition"`` F = E + F~ (Table 4).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_basis: int,
        basis: BasisKind = "orthogonal",
        fusion: Fusion = "dual_gate",
        dropout: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if fusion not in ("dual_gate", "none", "addition"):
            raise ValueError(f"unknown fusion {fusion!r}; expected dual_gate, none or addition")
        self.fusion = fusion
        self.register_buffer("basis", build_basis(basis, n_basis, d_model, seed=seed))  # B (n, d), fixed
        self.basis_scale = row_scale(basis, n_basis, d_model)
        self.gamma = nn.Parameter(torch.ones(n_basis, d_model))
        self.beta = nn.Parameter(torch.zeros(n_basis, d_model))
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self._kv_key: tuple[object, ...] | None = None
        self._kv_cache: tuple[Tensor, Tensor] | None = None
        if fusion == "dual_gate":
            self.input_gate = DualGate(d_model)  # G_I
            self.forget_gate = DualGate(d_model)  # G_F

    def basis_kv(self) -> tuple[Tensor, Tensor]:
        """Projected keys/values of ``B^ = gamma * B + beta``, each (1, H, n, d_k).

        Without autograd (inference) the projection is kept and reused until one of the tensors it
        depends on changes (in-place update, new storage), which saves ~2 n d^2 FLOPs per call.
        """
        if torch.is_grad_enabled():
            return self._project_basis()
        autocast = torch.is_autocast_enabled(self.basis.device.type)  # bf16 projections under autocast
        key = (autocast, *weights_signature(self._basis_inputs()))
        if self._kv_key != key:
            self._kv_cache = self._project_basis()
            self._kv_key = key
        return self._kv_cache

    def _basis_inputs(self) -> tuple[Tensor, ...]:
        """The tensors the projected basis depends on."""
        return (self.basis, self.gamma, self.beta, self.attn.in_proj.weight, self.attn.in_proj.bias)

    def _project_basis(self) -> tuple[Tensor, Tensor]:
        b_hat = self.gamma * (self.basis_scale * self.basis) + self.beta  # (n, d)
        return self.attn.project_kv(b_hat.unsqueeze(0))

    def fuse(self, e: Tensor, f_tilde: Tensor) -> Tensor:
        """Fusion of embeddings ``e`` with attended features ``f_tilde``, both (B, N, d)."""
        if self.fusion == "none":
            return f_tilde
        if self.fusion == "addition":
            return e + f_tilde
        g_i = self.input_gate(e, f_tilde)
        g_f = self.forget_gate(e, f_tilde)
        return g_i * torch.tanh(e + f_tilde) + g_f * e + f_tilde

    def forward(self, e: Tensor, basis_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """E (B, N, d) -> F (B, N, d); ``basis_kv`` from :meth:`basis_kv` skips re-projecting B^."""
        k, v = basis_kv if basis_kv is not None else self.basis_kv()
        b, n, d = e.shape
        # CRA is token-wise: all B*N tokens are queries of one sequence over the shared basis
        q = self.attn.project_q(e.reshape(1, b * n, d))  # (1, H, B*N, d_k)
        f_tilde = self.attn.attend_heads(q, k, v).view(b, n, d)  # F~ (B, N, d), Eq. 8
        return self.fuse(e, f_tilde)


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over the sequence axis of (B, N, d); ``mask`` (B, N) bool selects the tokens."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def triplet_loss(img: Tensor, rep: Tensor, margin: float = 0.2) -> Tensor:
    """L_Global of Eq. 10: bidirectional hinge on cosine similarity with the hardest in-batch negatives.

    ``img`` and ``rep`` are pooled features (B, d) of paired studies (row i of each is a pair). For
    each image the most similar *other* report is the negative, and vice versa; the two hinge terms
    are summed per pair and averaged over the batch. A batch of one has no negatives: the loss is 0.
    """
    b = img.shape[0]
    if b < 2:
        return img.sum() * 0.0
    sim = F.normalize(img, dim=-1) @ F.normalize(rep, dim=-1).T  # (B, B), sim[i, j] = <img_i, rep_j>
    pos = sim.diagonal()  # (B,)
    off = sim.masked_fill(torch.eye(b, dtype=torch.bool, device=sim.device), -2.0)  # cosine >= -1
    hardest_rep = off.max(dim=1).values  # <F_I, F_R->, hardest report for each image
    hardest_img = off.max(dim=0).values  # <F_I-, F_R>, hardest image for each report
    loss = F.relu(margin - pos + hardest_rep) + F.relu(margin - pos + hardest_img)
    return loss.mean()
