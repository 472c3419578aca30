"""Semantic visual tokenizer for LSU: codes of a frozen ImageNet network's features.

UAR's LSU (uar-paper.md §2.2) tokenizes each view with a frozen tokenizer pretrained on non-medical
images, takes an argmax to token ids and embeds them with a trainable lookup ``W_I``. The DALL-E
dVAE it names cannot be had offline, and a pixel-reconstruction VQ-VAE trained here
(:mod:`uar.visual.vqvae`) keeps texture but loses the findings (docs/training.md, token probe).
This tokenizer takes the step BEiT v2 took from the dVAE to a semantic tokenizer: the codes quantize
the features of a frozen ImageNet network instead of pixels.

    view (B, 1, S, S) in [0, 1] --grey to RGB, ImageNet normalisation--> (B, 3, S, S)
        --EfficientNet-Lite0 stem + blocks 0..10 (frozen, stride 16)--> features (B, 112, S/16, S/16)
        --L2-normalise per position, nearest code by cosine--> ids (B, (S/16) ** 2)

At S = 224 that is a 14 x 14 grid, 196 ids per view, the token count of the paper's 112 px dVAE.
The codebook (K unit vectors in the 112-d feature space) is learned by spherical k-means on the
training images (:func:`uar.visual.kmeans.train_semantic_tokenizer`); the trunk keeps its ImageNet
weights, which are stored with the codebook so that a saved tokenizer never depends on the installed
weight file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uar.config import from_known_keys
from uar.modules.cnn import FEATURE_CHANNELS, IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0Trunk

__all__ = ["SEMANTIC_KIND", "SemanticConfig", "SemanticTokenizer"]

SEMANTIC_KIND = "semantic"
TRUNK_STRIDE = 16  # four stride-2 stages before block 10 of EfficientNet-Lite0


@dataclass(frozen=True)
class SemanticConfig:
    """Settings of :class:`SemanticTokenizer`; ``kind`` tells it apart from a ``VQConfig`` on disk."""

    codebook_size: int = 1024  # |V_I|, number of visual token ids (k of the k-means)
    image_size: int = 224  # S, input side in pixels
    trunk: Literal["efficientnet-lite0"] = "efficientnet-lite0"  # frozen ImageNet trunk, blocks 0..10
    kind: Literal["semantic"] = SEMANTIC_KIND

    def __post_init__(self) -> None:
        if self.image_size % TRUNK_STRIDE:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {TRUNK_STRIDE}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.kind != SEMANTIC_KIND:
            raise ValueError(f"not a semantic tokenizer config (kind {self.kind!r})")

    @property
    def downsample(self) -> int:
        """Pixels per token along a side: the trunk's stride, 16."""
        return TRUNK_STRIDE

    @property
    def feature_dim(self) -> int:
        """Channels of the trunk's feature grid, the dimension of a code vector (112)."""
        return FEATURE_CHANNELS

    @property
    def grid(self) -> int:
        """Side of the token grid, ``image_size / 16`` (14 for 224 px)."""
        return self.image_size // TRUNK_STRIDE

    @property
    def tokens_per_image(self) -> int:
        """L, token ids per image (196 for 224 px)."""
        return self.grid**2

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in tokenizer files and UAR checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SemanticConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        return from_known_keys(cls, d)


class SemanticTokenizer(nn.Module):
    """Frozen trunk + codebook: views ``(B, 1, S, S)`` in [0, 1] -> token ids ``(B, L)``.

    Tensors (all saved): the trunk's weights and batch-norm statistics (``trunk.*``) and ``codebook``
    ``(K, 112)`` of unit vectors. Always in eval mode: ``train()`` is a no-op for the batch norms.
    """

    def __init__(self, cfg: SemanticConfig | None = None, *, pretrained: bool = True) -> None:
        super().__init__()
        self.config = cfg or SemanticConfig()
        self.trunk = EfficientNetLite0Trunk(pretrained)
        self.register_buffer("codebook", torch.zeros(self.config.codebook_size, FEATURE_CHANNELS))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> SemanticTokenizer:
        """The tokenizer is frozen: it stays in eval mode whatever ``mode`` says."""
        return super().train(False)

    def _check(self, images: Tensor) -> None:
        s = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[-2:] != (s, s):
            raise ValueError(f"expected images (B, 1, {s}, {s}), got {tuple(images.shape)}")

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """Unit-length trunk features per position: ``(B, 1, S, S)`` -> ``(B, L, 112)``."""
        self._check(images)
        x = (images.float().expand(-1, 3, -1, -1) - self.mean) / self.std  # (B, 3, S, S)
        feats = self.trunk(x).flatten(2).transpose(1, 2)  # (B, L, 112)
        return F.normalize(feats, dim=-1)

    @torch.no_grad()
    def assign(self, feats: Tensor) -> Tensor:
        """Nearest code (largest cosine) of unit vectors ``(..., 112)`` -> ids ``(...)`` long."""
        return (feats @ self.codebook.t()).argmax(dim=-1)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Token ids of views ``(B, 1, S, S)`` in [0, 1] -> ``(B, L)`` long."""
        return self.assign(self.features(images))

    def code_vectors(self) -> Tensor:
        """The codebook ``(K, 112)``, unit vectors in the trunk's feature space."""
        return self.codebook
