"""Learning the codebook of the semantic tokenizer: spherical k-means on frozen trunk features.

``uar tokenizer train --kind semantic`` calls :func:`train_semantic_tokenizer`. Every training
image is resized to ``S`` (the inference transform), passed through the frozen trunk, and its
``(S/16) ** 2`` unit feature vectors join the pool; at most ``max_vectors`` of them (a uniform random
sample) are clustered. Spherical k-means (Dhillon and Modha 2001) alternates cosine assignment and
re-normalised means; it starts from k-means++ seeds drawn from a sample of the pool, and a code
that loses all its vectors is moved onto the pool vector its code fits worst. Metrics come from
held-out images when given: the mean cosine between a feature and its code, codes used and the code
perplexity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from uar.data.images import load_image, to_tensor
from uar.visual.semantic import SemanticConfig, SemanticTokenizer
from uar.visual.vqvae import code_perplexity

__all__ = [
    "SemanticTokenizerReport",
    "image_features",
    "kmeans_pp_init",
    "spherical_kmeans",
    "train_semantic_tokenizer",
]

log = logging.getLogger(__name__)


@dataclass
class SemanticTokenizerReport:
    """Outcome of :func:`train_semantic_tokenizer`."""

    out_path: str
    n_images: int
    n_vectors: int  # feature vectors clustered
    iterations: int
    eval_on: str  # "held-out" or "training"
    n_eval_images: int
    mean_cosine: float  # mean cosine between an evaluation feature and its code
    perplexity: float  # exp(entropy) of the code histogram over the evaluation images
    codes_used: int
    usage: float  # codes_used / codebook_size
    seconds: float

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain-JSON form."""
        return asdict(self)


@torch.no_grad()
def image_features(
    tok: SemanticTokenizer, paths: Sequence[Path], batch_size: int = 32, desc: str = "trunk features"
) -> torch.Tensor:
    """Unit trunk features of every image: ``(N, L, 112)`` float32 (images resized to ``S``)."""
    size = tok.config.image_size
    out: list[torch.Tensor] = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", disable=None):
        views = torch.stack([to_tensor(load_image(p), size) for p in paths[start : start + batch_size]])
        out.append(tok.features(views))
    return torch.cat(out)


@torch.no_grad()
def kmeans_pp_init(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur and Vassilvitskii 2007) on unit vectors ``x`` ``(N, D)`` with the
    cosine distance ``1 - cos``: each new seed is drawn with probability proportional to its squared
    distance from the nearest seed so far. Returns ``(k, D)``."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"{n} feature vectors cannot seed {k} codes")
    seeds = torch.empty(k, dtype=torch.long)
    seeds[0] = torch.randint(n, (1,), generator=gen)
    dist = (1 - x @ x[seeds[0]]).clamp_min(0) ** 2  # (N,)
    for i in range(1, k):
        total = float(dist.sum())
        if total <= 0:  # fewer distinct vectors than codes: fill with random picks
            seeds[i:] = torch.randint(n, (k - i,), generator=gen)
            break
        seeds[i] = torch.multinomial(dist / total, 1, generator=gen)
        dist = torch.minimum(dist, (1 - x @ x[seeds[i]]).clamp_min(0) ** 2)
    return x[seeds].clone()


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor, k: int, iterations: int = 20, seed: int = 0, chunk: int = 65536
) -> torch.Tensor:
    """Spherical k-means of unit vectors ``x`` ``(N, D)`` -> ``k`` unit centroids ``(k, D)``.

    Raises ``ValueError`` when there are fewer vectors than codes.
    """
    n = x.shape[0]
    if n < k:
        raise ValueError(f"{n} feature vectors cannot seed {k} codes")
    gen = torch.Generator().manual_seed(seed)
    centroids = kmeans_pp_init(x[torch.randperm(n, generator=gen)[: max(20 * k, 2000)]], k, gen)  # (k, D)
    for _ in tqdm(range(iterations), desc="k-means", unit="iter", disable=None):
        sums = torch.zeros_like(centroids)
        counts = torch.zeros(k)
        best = torch.empty(n)
        for start in range(0, n, chunk):
            part = x[start : start + chunk]
            sim = part @ centroids.t()  # (n_chunk, k)
            score, ids = sim.max(dim=1)
            best[start : start + chunk] = score
            sums.index_add_(0, ids, part)
            counts.index_add_(0, ids, torch.ones_like(score))
        empty = (counts == 0).nonzero().flatten()
        centroids = F.normalize(sums, dim=1)
        if len(empty):  # re-seed on the vectors their codes fit worst
            worst = best.argsort()[: len(empty)]
            centroids[empty] = x[worst]
    return centroids


def _code_metrics(tok: SemanticTokenizer, feats: torch.Tensor) -> tuple[float, float, int]:
    """(mean cosine to the assigned code, perplexity, codes used) of features ``(N, L, D)``."""
    flat = feats.reshape(-1, feats.shape[-1])
    sim = flat @ tok.codebook.t()
    score, ids = sim.max(dim=1)
    used = int(torch.unique(ids).numel())
    return float(score.mean()), float(code_perplexity(ids, tok.config.codebook_size)), used


def train_semantic_tokenizer(
    image_paths: Sequence[Path],
    out_path: str | Path,
    cfg: SemanticConfig,
    *,
    iterations: int = 20,
    max_vectors: int = 400_000,
    seed: int = 0,
    eval_paths: Sequence[Path] | None = None,
) -> SemanticTokenizerReport:
    """Learn the codebook on ``image_paths`` and save the tokenizer to ``out_path`` (safetensors).

    Args:
        image_paths: training images (PNG / JPEG / DICOM).
        out_path: where :func:`uar.visual.train.save_visual_tokenizer` writes the tokenizer.
        cfg: codebook size and input side.
        iterations: k-means iterations.
        max_vectors: at most this many feature vectors (a seeded uniform sample) are clustered.
        seed: seeds the sample and the k-means start.
        eval_paths: held-out images for the metrics (default: the training images).
    """
    from uar.visual.train import save_visual_tokenizer

    t0 = time.perf_counter()
    tok = SemanticTokenizer(cfg)
    feats = image_features(tok, list(image_paths)).reshape(-1, cfg.feature_dim)  # (N * L, D)
    rng = np.random.default_rng(seed)
    if feats.shape[0] > max_vectors:
        feats = feats[torch.from_numpy(rng.choice(feats.shape[0], max_vectors, replace=False))]
    tok.codebook.copy_(spherical_kmeans(feats, cfg.codebook_size, iterations, seed))
    if eval_paths:
        eval_feats, eval_on, n_eval = (
            image_features(tok, list(eval_paths), desc="held-out"),
            "held-out",
            len(eval_paths),
        )
    else:
        eval_feats, eval_on, n_eval = feats[None], "training", len(image_paths)
    mean_cos, perplexity, used = _code_metrics(tok, eval_feats)
    save_visual_tokenizer(out_path, tok)
    report = SemanticTokenizerReport(
        out_path=str(out_path),
        n_images=len(image_paths),
        n_vectors=int(feats.shape[0]),
        iterations=iterations,
        eval_on=eval_on,
        n_eval_images=n_eval,
        mean_cosine=mean_cos,
        perplexity=perplexity,
        codes_used=used,
        usage=used / cfg.codebook_size,
        seconds=time.perf_counter() - t0,
    )
    log.info("semantic tokenizer: %d codes used of %d, mean cosine %.3f", used, cfg.codebook_size, mean_cos)
    return report
