"""Text-to-Image Refiner (uar-paper.md §2.4, open decisions 9-10).

A free learnable mask ``M`` (T_max x L_max, init 0) whose ``k * sigmoid(M)`` is added to the logits of
every decoder cross-attention layer, shared by all heads, cropped to the current T x L and indexed by
the decoding step during cached generation. L_Mask (Eq. 12) pushes sigmoid(M) towards 1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class TIRMask(nn.Module):
    """The learnable T_max x L_max mask and its logit bias ``k * sigmoid(M)``."""

    def __init__(self, t_max: int, l_max: int, k: float = 1000.0) -> None:
        super().__init__()
        self.k = k
        self.m = nn.Parameter(torch.zeros(t_max, l_max))  # M

    def bias(self, t: int, l_len: int, start: int = 0) -> Tensor:
        """Logit bias for text positions ``start..start+t-1`` over ``l_len`` visual tokens, (t, L)."""
        if start + t > self.m.shape[0] or l_len > self.m.shape[1]:
            raise ValueError(
                f"TIR mask is {tuple(self.m.shape)}; asked for {start + t} text x {l_len} visual positions"
            )
        return self.k * torch.sigmoid(self.m[start : start + t, :l_len])

    def loss(self, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
        """L_Mask over the whole mask, see :func:`mask_loss`."""
        return mask_loss(self.m, reduction)


def mask_loss(m: Tensor, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """L_Mask = sum_ij (1 - sigmoid(M_ij)) (Eq. 12 as printed); ``"mean"`` divides by T_max * L_max."""
    terms = 1.0 - torch.sigmoid(m)
    if reduction == "sum":
        return terms.sum()
    if reduction == "mean":
        return terms.mean()
    raise ValueError(f"unknown mask loss reduction {reduction!r}; expected sum or mean")
