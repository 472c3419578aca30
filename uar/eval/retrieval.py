"""Image-to-report retrieval from the aligned CRA features (uar-paper.md §5.6, Fig. 3).

Each study's image vector is compared by cosine similarity with the report vectors of all studies
of the split (``UAR.align_features``); the study's own report is the single correct answer.
The rank of the correct report is pessimistic under ties: it is the number of reports whose
similarity is greater than **or equal to** the correct one (so identical vectors for every study
give rank N, not 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

RECALL_AT: tuple[int, ...] = (1, 5, 10)


def cosine_similarity_matrix(img: Tensor, rep: Tensor) -> Tensor:
    """Cosine similarity of every image vector with every report vector.

    img: (N, d), rep: (M, d) -> (N, M); vectors are L2-normalised here (zero vectors stay zero).
    """
    if img.ndim != 2 or rep.ndim != 2 or img.shape[1] != rep.shape[1]:
        raise ValueError(
            f"expected (N, d) and (M, d) features, got {tuple(img.shape)} and {tuple(rep.shape)}"
        )
    img = torch.nn.functional.normalize(img.double(), dim=1)  # (N, d)
    rep = torch.nn.functional.normalize(rep.double(), dim=1)  # (M, d)
    return img @ rep.T  # (N, M)


def ranks_from_similarity(sim: Tensor) -> Tensor:
    """1-based rank of the correct report (column i for row i) per image; ties ranked pessimistically.

    sim: (N, N) -> LongTensor (N,).
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square (N, N) similarity matrix, got {tuple(sim.shape)}")
    correct = sim.diagonal().unsqueeze(1)  # (N, 1)
    return (sim >= correct).sum(dim=1)  # (N,)


def retrieval_metrics(img: Tensor, rep: Tensor) -> dict[str, float]:
    """Recall@1/5/10, median and mean rank of image→report retrieval over N studies.

    img, rep: (N, d) aligned features, row i of both from study i. Returns ``recall_at_1``,
    ``recall_at_5``, ``recall_at_10`` (fractions in [0, 1]), ``median_rank``, ``mean_rank`` (1 = best)
    and ``n``. The median of an even count is the mean of the two middle ranks.
    """
    if img.shape[0] != rep.shape[0]:
        raise ValueError(f"{img.shape[0]} image vectors but {rep.shape[0]} report vectors")
    if img.shape[0] == 0:
        raise ValueError("no studies for retrieval")
    ranks = ranks_from_similarity(cosine_similarity_matrix(img, rep)).double()  # (N,)
    out = {f"recall_at_{k}": float((ranks <= k).double().mean()) for k in RECALL_AT}
    out["median_rank"] = float(ranks.quantile(0.5))
    out["mean_rank"] = float(ranks.mean())
    out["n"] = int(ranks.numel())
    return out
