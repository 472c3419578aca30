"""Does a trained model read the image? Teacher-forced cross-entropy with each study's own visual
input against the input of another study.

For every study of ``--split`` (default ``test``) of an R2Gen-layout set, the model's teacher-forced
cross-entropy per report word (the training loss ``ce``, in the checkpoint's stage) is computed twice:
with the study's own views (visual tokens for LSU models, images for CNN models) and with the views
of another study (the next one of the same batch, a cyclic shift, so that no study keeps its own).
A model that ignores the image scores the same in both; the gap (other minus own, nats per word) is
how much the image tells it about the report.

Usage::

    python benchmarks/image_reliance.py CHECKPOINT [CHECKPOINT ...] --data runs/default/test [--split test]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from uar.checkpoint import load_checkpoint
from uar.data.r2gen import R2GenDataset, collate
from uar.generator import ReportGenerator


@torch.no_grad()
def reliance(
    checkpoint: Path, data: Path, split: str, batch_size: int = 16, max_studies: int | None = None
) -> dict:
    """Mean teacher-forced CE per word with own and with shifted visual input, and their gap."""
    ckpt = load_checkpoint(checkpoint)
    gen = ReportGenerator(ckpt)
    model, cfg = ckpt.model, ckpt.cfg
    ds = R2GenDataset(
        data, split, ckpt.text_tokenizer, n_views=cfg.n_views, image_size=cfg.image_size, train=False
    )
    n = len(ds) if max_studies is None else min(len(ds), max_studies)
    sums = {"own": 0.0, "other": 0.0}
    words = 0
    for start in tqdm(range(0, n, batch_size), desc=checkpoint.name, unit="batch", disable=None):
        batch = collate([ds[i] for i in range(start, min(n, start + batch_size))])
        if batch.visual.shape[0] < 2:
            continue
        views = [[v[0].numpy() for v in study] for study in batch.visual]  # (B, V) arrays (H, W)
        visual = gen.visual_input([(v[0], v[1] if len(v) > 1 else None) for v in views])
        n_words = int((batch.reports[:, 1:] != 0).sum()) + batch.reports.shape[0]  # words + eos
        for name, vis in (("own", visual), ("other", visual.roll(1, dims=0))):
            sums[name] += float(model(vis, batch.reports, stage=model.stage)["ce"]) * n_words
        words += n_words
    own, other = sums["own"] / words, sums["other"] / words
    return {"checkpoint": str(checkpoint), "own": own, "other": other, "gap": other - own, "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-studies", type=int)
    args = ap.parse_args()
    print(f"teacher-forced CE per word on {args.data} ({args.split}): own views vs another study's")
    print(f"{'checkpoint':<48} {'own':>7} {'other':>7} {'gap':>7}")
    for path in args.checkpoints:
        r = reliance(path, args.data, args.split, max_studies=args.max_studies)
        print(f"{str(path)[-48:]:<48} {r['own']:>7.4f} {r['other']:>7.4f} {r['gap']:>7.4f}")


if __name__ == "__main__":
    main()
