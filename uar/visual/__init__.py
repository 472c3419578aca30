"""Discrete visual tokenizer (VQ-VAE) for the Latent Space Unifier.

``uar.visual.vqvae`` holds the model; ``uar.visual.train`` its training, saving and loading.
"""

from uar.visual.vqvae import VisualTokenizer, VQConfig, VQOutput

__all__ = ["VQConfig", "VQOutput", "VisualTokenizer"]
