"""Token probe: how much of each finding do a visual tokenizer's codes carry?

For every tokenizer given, the token ids of both views of each study are computed (full view,
the inference resize), and one linear probe per finding is trained on the training studies and
scored by AUROC on held-out studies, from two feature sets:

- bag of codes: how often each code occurs in each view (``log1p`` counts, 2 x K features);
- code at each position: one-hot code per token position (a sparse ``V * L * K`` features).

A finding's label is positive when the study's ground truth marks it 1 (absent or unmentioned = 0);
findings with no positive or no negative held-out study are left out of the macro average. The
probes are L2-regularised logistic regressions trained full-batch with Adam (seeded).

Usage (a synthetic dataset from ``uar data synthetic``, labels in its annotation)::

    python benchmarks/token_probe.py --data runs/default/data \
        --tokenizer semantic=runs/default/tokenizer.safetensors --tokenizer pixel=runs/vq.safetensors \
        --train-studies 2400 --val-studies 600 [--out probe.json]

``--train-studies`` come from the train split and ``--val-studies`` from the val split (topped up
from the end of the train split when the val split is smaller; never overlapping).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uar.data.images import load_image, to_tensor
from uar.data.r2gen import read_annotation
from uar.eval.labeler import OBSERVATIONS
from uar.visual.train import load_visual_tokenizer

FINDINGS = tuple(o for o in OBSERVATIONS if o != "No Finding")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is missing."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def studies(data: Path, n_train: int, n_val: int) -> tuple[list[dict], list[dict]]:
    """``n_train`` train-split entries and ``n_val`` held-out entries (val split, then train's tail)."""
    ann = read_annotation(data / "annotation.json")
    train, val = list(ann.get("train", [])), list(ann.get("val", []))
    if len(val) < n_val:
        need = n_val - len(val)
        val, train = val + train[-need:], train[:-need]
    if len(train) < n_train:
        raise SystemExit(f"{data}: only {len(train)} training studies left for --train-studies {n_train}")
    return train[:n_train], val[:n_val]


def labels_of(entries: list[dict]) -> np.ndarray:
    """(N, 14) 0/1 ground-truth labels."""
    return np.array([[int((e.get("labels") or {}).get(f) == 1) for f in FINDINGS] for e in entries])


@torch.no_grad()
def tokens_of(tok: torch.nn.Module, data: Path, entries: list[dict], batch: int = 32) -> torch.Tensor:
    """(N, V, L) token ids of the studies' views (full view at the tokenizer's input size)."""
    size = tok.config.image_size
    paths = [data / "images" / p for e in entries for p in e["image_path"]]
    n_views = len(entries[0]["image_path"])
    out = []
    for start in tqdm(range(0, len(paths), batch), desc="tokens", unit="batch", disable=None):
        views = torch.stack([to_tensor(load_image(p), size) for p in paths[start : start + batch]])
        out.append(tok.encode(views))
    return torch.cat(out).view(len(entries), n_views, -1)


def fit_probe(
    make_logits: torch.nn.Module, y: torch.Tensor, steps: int, lr: float, weight_decay: float, seed: int
) -> torch.nn.Module:
    """Full-batch Adam on the mean binary cross-entropy of all 14 probes at once."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(make_logits.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(make_logits(None), y)
        loss.backward()
        opt.step()
    return make_logits


class BagProbe(torch.nn.Module):
    """Linear probes on standardised ``log1p`` code counts per view."""

    def __init__(self, ids: torch.Tensor, k: int) -> None:
        super().__init__()
        self.k = k
        self.mean, self.std = None, None
        x = self.features(ids)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-3)
        self.x = (x - self.mean) / self.std
        self.linear = torch.nn.Linear(x.shape[1], len(FINDINGS))

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        n, v, _ = ids.shape
        counts = torch.zeros(n, v, self.k)
        counts.scatter_add_(2, ids, torch.ones_like(ids, dtype=torch.float32))
        return torch.log1p(counts).view(n, v * self.k)

    def forward(self, ids: torch.Tensor | None) -> torch.Tensor:
        x = self.x if ids is None else (self.features(ids) - self.mean) / self.std
        return self.linear(x)


class PositionProbe(torch.nn.Module):
    """Linear probes on the one-hot code at each position: one weight per (position, code)."""

    def __init__(self, ids: torch.Tensor, k: int) -> None:
        super().__init__()
        self.k = k
        self.n_pos = ids.shape[1] * ids.shape[2]
        self.ids = self.flat(ids)
        self.weight = torch.nn.EmbeddingBag(self.n_pos * k, len(FINDINGS), mode="sum")
        torch.nn.init.zeros_(self.weight.weight)
        self.bias = torch.nn.Parameter(torch.zeros(len(FINDINGS)))

    def flat(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[0]
        return ids.reshape(n, -1) + torch.arange(self.n_pos) * self.k  # (N, V*L) feature indices

    def forward(self, ids: torch.Tensor | None) -> torch.Tensor:
        flat = self.ids if ids is None else self.flat(ids)
        return self.weight(flat) + self.bias


def probe_tokenizer(name: str, path: Path, data: Path, train: list[dict], val: list[dict], seed: int) -> dict:
    """Per-finding AUROC of both probes for one tokenizer."""
    t0 = time.perf_counter()
    tok = load_visual_tokenizer(path)
    k = tok.config.codebook_size
    ids_tr, ids_va = tokens_of(tok, data, train), tokens_of(tok, data, val)
    y_tr = torch.from_numpy(labels_of(train)).float()
    y_va = labels_of(val)
    result: dict = {
        "name": name,
        "tokenizer": str(path),
        "kind": tok.config.to_dict().get("kind", "pixel"),
        "image_size": tok.config.image_size,
        "codebook_size": k,
        "codes_used": int(torch.unique(ids_tr).numel()),
    }
    probes = {
        "bag": (BagProbe(ids_tr, k), 300, 0.01, 1e-3),
        "position": (PositionProbe(ids_tr, k), 300, 0.05, 1e-4),
    }
    for kind, (probe, steps, lr, wd) in probes.items():
        fit_probe(probe, y_tr, steps, lr, wd, seed)
        with torch.no_grad():
            scores = probe(ids_va).numpy()
        per = {f: auroc(scores[:, i], y_va[:, i]) for i, f in enumerate(FINDINGS)}
        kept = [v for v in per.values() if not np.isnan(v)]
        result[kind] = {"macro_auroc": float(np.mean(kept)), "per_finding": per}
    result["seconds"] = time.perf_counter() - t0
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="synthetic dataset folder (annotation.json)")
    ap.add_argument("--tokenizer", action="append", required=True, help="NAME=PATH, repeatable")
    ap.add_argument("--train-studies", type=int, default=2400)
    ap.add_argument("--val-studies", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    args = ap.parse_args()
    train, val = studies(args.data, args.train_studies, args.val_studies)
    results = []
    for spec in args.tokenizer:
        name, _, path = spec.partition("=")
        results.append(probe_tokenizer(name, Path(path), args.data, train, val, args.seed))
    print(f"\nlinear token probes: {len(train)} train / {len(val)} held-out studies, macro AUROC")
    print(f"{'tokenizer':<24} {'kind':<9} {'px':>4} {'codes':>6} {'bag':>6} {'position':>9}")
    for r in results:
        print(
            f"{r['name']:<24} {r['kind']:<9} {r['image_size']:>4} {r['codes_used']:>6} "
            f"{r['bag']['macro_auroc']:>6.3f} {r['position']['macro_auroc']:>9.3f}"
        )
    print("\nper finding (bag of codes / code at each position):")
    print(f"{'finding':<28}" + "".join(f"{r['name'][:17]:>18}" for r in results))
    for f in FINDINGS:
        cells = "".join(
            f"{r['bag']['per_finding'][f]:>9.3f}{r['position']['per_finding'][f]:>9.3f}" for r in results
        )
        print(f"{f:<28}{cells}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
