"""The two visual tokenizer kinds behind one interface, and building one from its stored config.

Both map views ``(B, 1, S, S)`` in [0, 1] to token ids ``(B, L)`` with ``encode`` and carry a
``config`` with ``codebook_size``, ``image_size``, ``downsample`` and ``tokens_per_image``:

- ``"pixel"``: :class:`uar.visual.vqvae.VisualTokenizer`, a VQ-VAE trained to reconstruct pixels
  (kept as an ablation; its codes carry few findings);
- ``"semantic"``: :class:`uar.visual.semantic.SemanticTokenizer`, k-means codes of a frozen ImageNet
  trunk's features (the default).

A stored config (tokenizer file metadata ``vq_config``, checkpoint metadata
``visual_tokenizer_config``) names its kind in ``kind``; a config without it is a pixel VQ-VAE
(files written before the semantic kind existed).
"""

from __future__ import annotations

from typing import Any, Literal

from uar.visual.semantic import SEMANTIC_KIND, SemanticConfig, SemanticTokenizer
from uar.visual.vqvae import VisualTokenizer, VQConfig

__all__ = [
    "TOKENIZER_KINDS",
    "AnyVisualTokenizer",
    "TokenizerKind",
    "build_visual_tokenizer",
    "tokenizer_kind",
]

TokenizerKind = Literal["semantic", "pixel"]
TOKENIZER_KINDS: tuple[str, ...] = ("semantic", "pixel")
AnyVisualTokenizer = VisualTokenizer | SemanticTokenizer


def tokenizer_kind(config: dict[str, Any]) -> TokenizerKind:
    """``"semantic"`` or ``"pixel"`` for a stored tokenizer config; ``ValueError`` for another kind."""
    kind = config.get("kind", "pixel")
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown visual tokenizer kind {kind!r}; known: {', '.join(TOKENIZER_KINDS)}")
    return kind


def build_visual_tokenizer(config: dict[str, Any]) -> AnyVisualTokenizer:
    """An untrained tokenizer of the stored ``config``'s kind, ready for ``load_state_dict``."""
    if tokenizer_kind(config) == SEMANTIC_KIND:
        return SemanticTokenizer(SemanticConfig.from_dict(config), pretrained=False)
    return VisualTokenizer(VQConfig.from_dict(config))
