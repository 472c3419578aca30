"""Tiny random-initialised UAR checkpoints for tests of every area (evaluation, app, node).

``make_tiny_checkpoint`` writes a real checkpoint in the product's format (with
:func:`uar.checkpoint.save_checkpoint`): a d=32, one-layer UAR (or an ablation preset such as
``"base"``), a tiny visual tokenizer and a small vocabulary built from :data:`TINY_REPORTS`. The model
is untrained, so its reports are word salad from that vocabulary; it loads and generates in well
under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uar.checkpoint import save_checkpoint
from uar.config import UARConfig, preset
from uar.model import UAR
from uar.text.tokenizer import TextTokenizer
from uar.visual.vqvae import VisualTokenizer, VQConfig

TINY_REPORTS: tuple[str, ...] = (
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "Heart size is enlarged. There is a small left pleural effusion. No pneumothorax.",
    "The lungs are clear bilaterally. No focal consolidation, effusion or pneumothorax.",
    "Cardiomegaly with mild pulmonary edema. Bibasilar atelectasis. XXXX sternotomy wires.",
    "Right lower lobe opacity concerning for pneumonia. No pleural effusion.",
    "No acute cardiopulmonary abnormality. Degenerative changes of the spine.",
)
TINY_IMAGE_SIZE = 32
TINY_CODEBOOK = 32
TINY_MAX_LEN = 24


def tiny_config(vocab_size: int, *, n_views: int = 2, preset_name: str = "uar") -> UARConfig:
    """The tiny architecture (d=32, 4 heads, one encoder and one decoder layer, 64 basis vectors)."""
    base = UARConfig(
        vocab_size=vocab_size,
        max_len=TINY_MAX_LEN,
        n_views=n_views,
        image_size=TINY_IMAGE_SIZE,
        visual_vocab_size=TINY_CODEBOOK,
        tokens_per_view=(TINY_IMAGE_SIZE // 8) ** 2,
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_enc_layers=1,
        n_dec_layers=1,
        n_basis=64,
    )
    return preset(preset_name, base)


def tiny_text_tokenizer() -> TextTokenizer:
    """A vocabulary of every word of :data:`TINY_REPORTS` (threshold 1, IU-Xray cleaning)."""
    cleaned = [TextTokenizer.clean_for("iu_xray", r) for r in TINY_REPORTS]
    return TextTokenizer.build(cleaned, threshold=1, max_len=TINY_MAX_LEN, dataset="iu_xray")


def make_tiny_checkpoint(path: str | Path, *, n_views: int = 2, preset: str = "uar", seed: int = 0) -> Path:
    """Write a tiny random-init checkpoint to ``path`` and return the path.

    Args:
        path: the ``.safetensors`` file to write (parent folders are created).
        n_views: 2 (frontal + lateral, IU-Xray style) or 1 (frontal only).
        preset: a :func:`uar.config.preset` name; ``"base"`` gives the CNN model without a visual
            tokenizer.
        seed: initialisation seed; the caller's global RNG state is left untouched.
    """
    text_tok = tiny_text_tokenizer()
    cfg = tiny_config(text_tok.vocab_size, n_views=n_views, preset_name=preset)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = UAR(cfg)
        if cfg.use_tir:
            model.stage = 2
        visual_tok = None
        if cfg.visual_encoder == "lsu":
            visual_tok = VisualTokenizer(
                VQConfig(
                    codebook_size=TINY_CODEBOOK,
                    image_size=TINY_IMAGE_SIZE,
                    hidden=16,
                    code_dim=16,
                    n_res_blocks=1,
                )
            )
    return save_checkpoint(
        path,
        model.eval(),
        text_tok,
        visual_tok,
        name=f"uar-tiny-{preset}",
        version="0.0.0",
        metrics={"note": "random initialisation, for tests only"},
    )
