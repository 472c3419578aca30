"""Discrete visual tokenizer for LSU: a small VQ-VAE trained on chest radiographs.

UAR tokenizes each view with the DALL-E dVAE encoder (uar-paper.md §2.2): 112x112 pixels, x8
downsampling, argmax over the codebook, 14x14 = 196 token ids per view. Those weights cannot be had
offline, so this module provides a light replacement with the same interface:

    image (B, 1, 112, 112) in [0, 1] --encoder--> z_e (B, D, 14, 14)
        --nearest codebook entry--> ids (B, 196) --codebook--> z_q --decoder--> recon (B, 1, 112, 112)

The codebook is learned with exponential moving averages (van den Oord et al. 2017, appendix; as in
VQ-VAE-2), the encoder with the straight-through estimator plus the commitment loss
``beta * ||z_e - sg(z_q)||^2``. Codes that fall out of use are restarted on random encoder outputs of
the current batch. Only the encoder and the codebook are needed by UAR (``encode``); the decoder
serves training and the reconstruction grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uar.config import from_known_keys

__all__ = ["VQConfig", "VQOutput", "VectorQuantizerEMA", "VisualTokenizer"]


@dataclass(frozen=True)
class VQConfig:
    """Architecture and codebook settings of :class:`VisualTokenizer`."""

    codebook_size: int = 1024  # |V_I|, number of visual token ids
    image_size: int = 112  # S, input side in pixels
    downsample: int = 8  # M; a power of two; token grid is (S / M) x (S / M)
    hidden: int = 64  # channels of the conv stacks
    code_dim: int = 64  # D, dimension of a codebook vector
    n_res_blocks: int = 2  # residual blocks at token resolution, in encoder and decoder
    commitment: float = 0.25  # beta of the commitment loss
    ema_decay: float = 0.99  # gamma of the codebook EMA
    dead_code_threshold: float = 1.0  # EMA of assignments per batch under which a code is restarted

    def __post_init__(self) -> None:
        n_down = int(math.log2(self.downsample))
        if 2**n_down != self.downsample or n_down < 1:
            raise ValueError(f"downsample must be a power of two >= 2, got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of downsample {self.downsample}"
            )
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")

    @property
    def grid(self) -> int:
        """Side of the token grid, ``image_size / downsample`` (14 for 112 / 8)."""
        return self.image_size // self.downsample

    @property
    def tokens_per_image(self) -> int:
        """L, token ids per image (196 for 112 / 8)."""
        return self.grid**2

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in safetensors metadata and UAR checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        return from_known_keys(cls, d)


class VQOutput(NamedTuple):
    """Result of :meth:`VisualTokenizer.forward`."""

    recon: Tensor  # (B, 1, S, S) reconstruction in [0, 1]
    loss: Tensor  # 0-dim: reconstruction MSE + beta * commitment
    ids: Tensor  # (B, L) long, nearest code per position
    perplexity: Tensor  # 0-dim: exp(entropy) of the code histogram of this batch
    mse: Tensor  # 0-dim: reconstruction MSE alone


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``, channels unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class VectorQuantizerEMA(nn.Module):
    """Nearest-neighbour codebook with EMA updates and dead-code restarts.

    Buffers: ``codebook`` (K, D), ``cluster_size`` (K,) and ``embed_sum`` (K, D) EMA statistics,
    ``initialised`` (flag: the codebook is seeded from the first training batch). A code whose EMA
    assignment count per batch falls under ``dead_code_threshold`` is moved onto a random encoder
    output of the current batch.
    """

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, d = cfg.codebook_size, cfg.code_dim
        self.register_buffer("codebook", torch.randn(k, d) / math.sqrt(d))
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("embed_sum", self.codebook.clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        # A new or restarted code starts at twice the threshold: about ln 2 / (1 - decay) steps
        # (69 at decay 0.99) to win assignments before it is restarted again (as in Jukebox).
        self.grace = 2.0 * cfg.dead_code_threshold

    def nearest(self, flat: Tensor) -> Tensor:
        """Ids of the nearest codes (squared L2) for vectors ``flat`` (N, D) -> (N,)."""
        cb = self.codebook
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ cb.t() + cb.pow(2).sum(1)[None]  # (N, K)
        return dist.argmin(dim=1)

    @torch.no_grad()
    def _update(self, flat: Tensor, ids: Tensor) -> None:
        """EMA update of the codebook from ``flat`` (N, D) assigned to ``ids`` (N,), then restarts."""
        cfg = self.cfg
        if not bool(self.initialised):
            pick = torch.randint(0, flat.shape[0], (cfg.codebook_size,), device=flat.device)
            self.codebook.copy_(flat[pick])
            self.cluster_size.fill_(self.grace)
            self.embed_sum.copy_(flat[pick] * self.grace)
            self.initialised.fill_(True)
            ids = self.nearest(flat)
        onehot = F.one_hot(ids, cfg.codebook_size).type(flat.dtype)  # (N, K)
        self.cluster_size.mul_(cfg.ema_decay).add_(onehot.sum(0), alpha=1 - cfg.ema_decay)
        self.embed_sum.mul_(cfg.ema_decay).add_(onehot.t() @ flat, alpha=1 - cfg.ema_decay)
        # Laplace smoothing keeps empty clusters from dividing by zero.
        n = self.cluster_size.sum()
        size = (self.cluster_size + 1e-5) / (n + cfg.codebook_size * 1e-5) * n
        self.codebook.copy_(self.embed_sum / size[:, None])
        dead = self.cluster_size < cfg.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
            self.codebook[dead] = flat[pick]
            self.embed_sum[dead] = flat[pick] * self.grace
            self.cluster_size[dead] = self.grace

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``z_e`` (B, D, h, w) -> (z_q straight-through (B, D, h, w), ids (B, h*w),
        commitment loss 0-dim). Updates the codebook when training."""
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
        ids = self.nearest(flat.detach())
        if self.training:
            self._update(flat.detach(), ids)
            ids = self.nearest(flat.detach())
        z_q = self.codebook[ids].view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, h, w)
        commitment = F.mse_loss(z_e, z_q.detach())
        z_q = z_e + (z_q - z_e).detach()
        return z_q, ids.view(b, h * w), commitment


class VisualTokenizer(nn.Module):
    """VQ-VAE image tokenizer: ``encode`` (B, 1, S, S) -> ids (B, (S/M)^2), ``decode`` back."""

    def __init__(self, cfg: VQConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or VQConfig()
        self.config = cfg
        n_down, h = int(math.log2(cfg.downsample)), cfg.hidden
        enc: list[nn.Module] = []
        c_in = 1
        for i in range(n_down):
            c_out = h // 2 if i == 0 and n_down > 1 else h
            enc += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        enc += [ResBlock(h) for _ in range(cfg.n_res_blocks)]
        enc += [nn.ReLU(), nn.Conv2d(h, cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizerEMA(cfg)
        dec: list[nn.Module] = [nn.Conv2d(cfg.code_dim, h, 3, padding=1)]
        dec += [ResBlock(h) for _ in range(cfg.n_res_blocks)]
        dec += [nn.ReLU()]
        for i in range(n_down):
            last = i == n_down - 1
            dec += [nn.ConvTranspose2d(h, 1 if last else h, 4, stride=2, padding=1)]
            if not last:
                dec += [nn.ReLU()]
        self.decoder = nn.Sequential(*dec)

    def code_vectors(self) -> Tensor:
        """The codebook ``(K, D)``: the decoder-side vector of every token id."""
        return self.quantizer.codebook

    def _check(self, images: Tensor) -> None:
        s = self.config.image_size
        if images.dim() != 4 or images.shape[1:] != (1, s, s):
            raise ValueError(f"expected images (B, 1, {s}, {s}), got {tuple(images.shape)}")

    def _z_e(self, images: Tensor) -> Tensor:
        """Encoder output ``(B, D, S/M, S/M)`` of images in [0, 1] (rescaled to [-1, 1] inside)."""
        return self.encoder(images * 2.0 - 1.0)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Token ids ``(B, L)`` (row-major over the token grid) of images ``(B, 1, S, S)`` in [0, 1].

        Nearest codebook entry per position; no gradient, no codebook update.
        """
        self._check(images)
        z_e = self._z_e(images)  # (B, D, g, g)
        b, d, g, _ = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B*g*g, D)
        return self.quantizer.nearest(flat).view(b, g * g)

    def decode(self, ids: Tensor) -> Tensor:
        """Images ``(B, 1, S, S)`` in [0, 1] from token ids ``(B, L)``."""
        g = self.config.grid
        if ids.dim() != 2 or ids.shape[1] != g * g:
            raise ValueError(f"expected ids (B, {g * g}), got {tuple(ids.shape)}")
        z_q = self.quantizer.codebook[ids].view(ids.shape[0], g, g, -1).permute(0, 3, 1, 2)  # (B, D, g, g)
        return torch.sigmoid(self.decoder(z_q))

    def forward(self, images: Tensor) -> VQOutput:
        """Encode, quantize (EMA codebook update when training) and reconstruct ``(B, 1, S, S)``."""
        self._check(images)
        z_q, ids, commitment = self.quantizer(self._z_e(images))
        recon = torch.sigmoid(self.decoder(z_q))  # (B, 1, S, S)
        mse = F.mse_loss(recon, images)
        loss = mse + self.config.commitment * commitment
        return VQOutput(recon, loss, ids, code_perplexity(ids, self.config.codebook_size), mse.detach())


def code_perplexity(ids: Tensor, codebook_size: int) -> Tensor:
    """``exp(entropy)`` of the histogram of ``ids`` over ``codebook_size`` codes (1 .. K)."""
    p = torch.bincount(ids.reshape(-1), minlength=codebook_size).float()
    p = p / p.sum()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
