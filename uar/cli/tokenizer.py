"""``uar tokenizer``: train the VQ-VAE visual tokenizer used by LSU.

Example::

    uar tokenizer train --images data/iu_xray/annotation.json --out runs/tok.safetensors --epochs 30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uar.visual.vqvae import VQConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tokenizer`` sub-command (with its ``train`` action)."""
    p = subparsers.add_parser("tokenizer", help="visual tokenizer (VQ-VAE) for LSU")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = actions.add_parser(
        "train",
        help="train a visual tokenizer on chest radiographs",
        description="Train the VQ-VAE; writes OUT (safetensors) and OUT-stem.recon.png beside it.",
    )
    t.add_argument(
        "--images",
        required=True,
        type=Path,
        help="folder of PNG/JPEG/DICOM images (recursive) or an R2Gen annotation.json (trains on the "
        "train split, reports metrics on the val split)",
    )
    t.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    t.add_argument("--codebook", type=int, default=1024, help="codebook size |V_I| (512-8192; 1024)")
    t.add_argument("--epochs", type=int, default=20, help="training epochs (20)")
    t.add_argument("--size", type=int, default=112, help="image side S in pixels (112)")
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
    cfg = VQConfig(codebook_size=args.codebook, image_size=args.size, hidden=args.hidden)
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
