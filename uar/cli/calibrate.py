"""``uar calibrate``: add the input-domain check (uar.ood) to an existing checkpoint.

Examples::

    uar calibrate uar/default_model/uar-default.safetensors --data runs/default/data
    uar calibrate runs/mine/best.safetensors --data data/iu_xray --out mine-checked.safetensors

``--data`` is the model's own training data in the R2Gen layout (``annotation.json`` + images): the
reference statistics come from its ``train`` split, the threshold from its ``val`` split (the
``--percentile`` of the validation studies' scores); the ``test`` split is never read. Every other
tensor and metadata entry of the checkpoint is copied unchanged (same weights, same reports).
See docs/ood.md.

``--grounding SYN`` chooses the decoder heads and the smoothing of the grounding maps
(docs/grounding.md) on the ``val`` split of a synthetic set (``uar data synthetic``: the renderer
knows where each finding is drawn): the heads and width whose maps point at the findings the reports
name (:func:`uar.eval.pointing.select_grounding`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from uar.calibration import calibrate_checkpoint, choose_grounding_heads, describe
from uar.ood import DEFAULT_PERCENTILE


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` sub-command."""
    p = subparsers.add_parser(
        "calibrate",
        help="add the input-domain check (reference statistics + threshold) to a checkpoint",
        description="Fit the input-domain score on the train split of DIR and set its threshold on "
        "the val split; store both in the checkpoint.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint (.safetensors) to calibrate")
    p.add_argument("--data", type=Path, help="R2Gen dataset folder (train + val splits): input-domain check")
    p.add_argument(
        "--grounding",
        type=Path,
        help="synthetic set: choose the grounding heads and map smoothing on its val split",
    )
    p.add_argument("--grounding-studies", type=int, default=300, help="val studies for --grounding")
    p.add_argument("--out", type=Path, help="write the calibrated checkpoint here (default: in place)")
    p.add_argument(
        "--percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help=f"threshold percentile of validation scores (default {DEFAULT_PERCENTILE:g})",
    )
    p.add_argument(
        "--max-reference", type=int, help="use at most N training studies for the statistics (default: all)"
    )
    p.add_argument(
        "--token-cache",
        type=Path,
        metavar="FILE",
        help="LSU models: read the visual token ids of --data's views from this cache of the training run"
        " (its visual_tokens.safetensors or --token-cache) instead of recomputing them",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``uar calibrate``; prints the written file and the threshold."""
    if args.max_reference is not None and args.max_reference < 2:
        raise ValueError(f"--max-reference must be >= 2, got {args.max_reference}")
    if args.data is None and args.grounding is None:
        raise ValueError("give --data (input-domain check), --grounding (grounding heads) or both")
    path = args.checkpoint
    if args.data is not None:
        path, check = calibrate_checkpoint(
            args.checkpoint,
            args.data,
            args.out,
            percentile=args.percentile,
            max_reference=args.max_reference,
            token_cache=args.token_cache,
        )
        print(describe(check))
    if args.grounding is not None:
        path, info = choose_grounding_heads(
            path, args.grounding, args.out if args.data is None else None, max_studies=args.grounding_studies
        )
        print(
            f"grounding heads {info['heads']}, smoothing {info['smoothing']:.3f} of the view's side:"
            f" pointing-game hit rate {info['val_hit_rate']:.3f} on"
            f" {info['val_trials']} validation trials (all heads {info['val_hit_rate_all_heads']:.3f})"
        )
    print(f"{path} ({Path(path).stat().st_size / 2**20:.1f} MiB)")
    return 0
