"""``uar tokenizer``: train the visual tokenizer used by LSU (semantic k-means codes or a pixel VQ-VAE).

Examples::

    uar tokenizer train --images data/iu_xray/annotation.json --out runs/tok.safetensors
    uar tokenizer train --kind pixel --images data/iu_xray/annotation.json --out runs/vq.safetensors \
        --epochs 30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uar.visual.kinds import TOKENIZER_KINDS
from uar.visual.semantic import SemanticConfig
from uar.visual.vqvae import VQConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tokenizer`` sub-command (with its ``train`` action)."""
    p = subparsers.add_parser("tokenizer", help="visual tokenizer (semantic codes or VQ-VAE) for LSU")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = actions.add_parser(
        "train",
        help="train a visual tokenizer on chest radiographs",
        description="Learn a visual tokenizer and write OUT (safetensors). semantic (default): "
        "spherical k-means codes of a frozen ImageNet EfficientNet-Lite0's features, 224 px, 14 x 14 "
        "tokens; pixel: a VQ-VAE trained to reconstruct pixels, 112 px (an ablation: its codes carry "
        "few findings), which also writes OUT-stem.recon.png.",
    )
    t.add_argument("--kind", choices=TOKENIZER_KINDS, default="semantic", help="tokenizer kind (semantic)")
    t.add_argument(
        "--images",
        required=True,
        type=Path,
        help="folder of PNG/JPEG/DICOM images (recursive) or an R2Gen annotation.json (trains on the "
        "train split, reports metrics on the val split)",
    )
    t.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    t.add_argument(
        "--codebook",
        type=int,
        default=None,
        help="codebook size |V_I| (512-8192; semantic 8192, pixel 1024: docs/benchmarks.md, 'more codes')",
    )
    t.add_argument("--epochs", type=int, default=20, help="pixel: training epochs (20)")
    t.add_argument("--iterations", type=int, default=20, help="semantic: k-means iterations (20)")
    t.add_argument(
        "--max-vectors", type=int, default=400_000, help="semantic: feature vectors clustered (400000)"
    )
    t.add_argument("--size", type=int, help="image side S in pixels (semantic 224, pixel 112)")
    t.add_argument("--batch", type=int, default=32, help="batch size (32)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    t.add_argument("--hidden", type=int, default=VQConfig.hidden, help="conv channels (64)")
    t.add_argument("--seed", type=int, default=0, help="random seed (0)")
    t.add_argument("--max-images", type=int, help="train on the first N images only")
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from uar.visual.train import collect_image_paths, train_tokenizer

    paths = collect_image_paths(args.images)
    held_out = None
    if args.images.suffix.lower() == ".json":
        try:
            held_out = collect_image_paths(args.images, split="val")
        except ValueError:  # no val split: metrics on training images
            held_out = None
    if args.max_images is not None:
        paths = paths[: args.max_images]
    if args.kind == "semantic":
        from uar.visual.kmeans import train_semantic_tokenizer

        semantic = train_semantic_tokenizer(
            paths,
            args.out,
            SemanticConfig(codebook_size=args.codebook or 8192, image_size=args.size or 224),
            iterations=args.iterations,
            max_vectors=args.max_vectors,
            seed=args.seed,
            eval_paths=held_out,
        )
        print(json.dumps(semantic.to_dict(), indent=2))
        return 0
    cfg = VQConfig(codebook_size=args.codebook or 1024, image_size=args.size or 112, hidden=args.hidden)
    report = train_tokenizer(
        paths,
        args.out,
        cfg,
        args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        eval_paths=held_out,
    )
    print(json.dumps(report.to_dict(), indent=2))
    return 0
