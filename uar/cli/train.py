"""``uar train``: two-stage UAR training on IU-Xray or MIMIC-CXR (see docs/training.md).

Examples::

    uar train --data data/iu_xray --out runs/uar-iu --tokenizer runs/tok.safetensors
    uar train --data data/mimic_cxr --dataset mimic_cxr --out runs/uar-mimic --tokenizer tok.safetensors
    torchrun --nproc_per_node 2 -m uar train --data data/iu_xray --out runs/ddp --tokenizer tok.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from uar.config import PRESETS, TrainConfig, UARConfig, preset

# MIMIC-CXR protocol (uar-paper.md §3-4, open decision 11): longer reports, one view, faster decay.
MIMIC_MODEL_DEFAULTS: dict[str, Any] = {"max_len": 100, "n_views": 1}
MIMIC_TRAIN_DEFAULTS: dict[str, Any] = {
    "step_size": 3,
    "epochs_stage1": 30,
    "epochs_stage2": 10,
    "seed": 9153,
}
MIMIC_VOCAB_THRESHOLD = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train UAR (two stages, exact resume, DDP through torchrun)",
        description="Train UAR or a Base / ablation preset; writes RUN/best.safetensors.",
    )
    p.add_argument("--data", required=True, type=Path, help="dataset root (annotation.json + images)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, last.pt, logs)")
    p.add_argument("--preset", default="uar", choices=sorted(PRESETS), help="model / ablation preset")
    p.add_argument("--dataset", default="iu_xray", choices=("iu_xray", "mimic_cxr"))
    p.add_argument("--tokenizer", type=Path, help="visual tokenizer (uar tokenizer train output)")
    p.add_argument("--epochs1", type=int, help="stage-1 epochs (100 IU / 30 MIMIC)")
    p.add_argument("--epochs2", type=int, help="stage-2 epochs (25 IU / 10 MIMIC)")
    p.add_argument("--single-stage", action="store_true", help="one stage with every loss (Table 2 f)")
    p.add_argument("--batch-size", type=int, help="global batch size (16), split over processes")
    p.add_argument("--lr", type=float, help="AdamW learning rate (5e-4)")
    p.add_argument("--step-size", type=int, help="StepLR epochs between decays (10 IU / 3 MIMIC)")
    p.add_argument("--seed", type=int, help="random seed (7580 IU / 9153 MIMIC)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or GPU)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (0)")
    p.add_argument("--max-val-studies", type=int, help="validate on at most N studies")
    p.add_argument("--eval-every", type=int, help="epochs between validation runs (1)")
    p.add_argument("--val-beam-size", type=int, help="beam size for validation decoding (3)")
    p.add_argument(
        "--select",
        choices=("bleu_4", "ce_micro_f1"),
        help="validation metric that picks best.safetensors (bleu_4, the paper's)",
    )
    p.add_argument("--log", choices=("csv", "tensorboard"), help="log format (csv)")
    p.add_argument(
        "--keep-epochs",
        action="store_true",
        help="also write the weights at the end of every epoch (OUT/epochs/), to average the last few"
        " with `uar export --average`",
    )
    p.add_argument(
        "--vocab-threshold", type=int, help="keep words seen >= N times in train (3 IU / 10 MIMIC)"
    )
    p.add_argument(
        "--punctuation",
        action="store_true",
        help="keep commas as tokens so generated reports keep their clauses (metrics score the "
        "R2Gen form without them)",
    )
    p.add_argument(
        "--init-visual-embeddings",
        choices=("random", "codebook"),
        help="LSU's W_I: random (Xavier, the paper's) or the visual tokenizer's code vectors projected to d",
    )
    p.add_argument("--n-crops", type=int, help="fixed training crops per image in the token cache (5)")
    p.add_argument(
        "--token-cache",
        type=Path,
        help="visual-token cache file, shareable by runs of one data set and tokenizer "
        "(RUN/visual_tokens.safetensors)",
    )
    p.add_argument("--no-augment", action="store_true", help="train on the plain resize (no crops)")
    p.add_argument(
        "--token-noise",
        type=float,
        help="LSU: share of visual token ids replaced by random codes in each training batch (0)",
    )
    p.add_argument(
        "--word-noise",
        type=float,
        help="share of report words the decoder reads as <unk> in each training batch (0)",
    )
    p.add_argument("--save-every", type=int, default=0, help="also write last.pt every N steps")
    p.add_argument("--max-steps", type=int, help="stop after N optimisation steps (resume later)")
    p.add_argument("--resume", action="store_true", help="continue RUN/last.pt exactly")
    p.add_argument("--name", default="UAR", help="model name stored in the checkpoint")
    size = p.add_argument_group("model size (defaults: the preset's)")
    size.add_argument("--d-model", type=int)
    size.add_argument("--n-heads", type=int)
    size.add_argument("--d-ff", type=int)
    size.add_argument("--layers", type=int, help="encoder and decoder layers")
    size.add_argument(
        "--enc-layers", type=int, help="encoder layers only (0: the decoder reads the aligned visual tokens)"
    )
    size.add_argument("--n-basis", type=int, help="CRA basis vectors (2048)")
    size.add_argument("--dropout", type=float)
    size.add_argument("--max-len", type=int, help="report tokens (60 IU / 100 MIMIC)")
    size.add_argument("--n-views", type=int, choices=(1, 2), help="views per study (2 IU / 1 MIMIC)")
    size.add_argument("--mask-loss", choices=("sum", "mean"), help="L_Mask reduction (sum, as printed)")
    p.set_defaults(func=run)


def configs_from_args(args: argparse.Namespace) -> tuple[UARConfig, TrainConfig]:
    """Model and training configuration: preset, then dataset defaults, then explicit flags."""
    model_changes: dict[str, Any] = {}
    train_changes: dict[str, Any] = {"dataset": args.dataset}
    if args.dataset == "mimic_cxr":
        model_changes.update(MIMIC_MODEL_DEFAULTS)
        train_changes.update(MIMIC_TRAIN_DEFAULTS)
        train_changes["extra"] = {"vocab_threshold": MIMIC_VOCAB_THRESHOLD}
    flags = {
        "d_model": args.d_model,
        "n_heads": args.n_heads,
        "d_ff": args.d_ff,
        "n_enc_layers": args.layers,
        "n_dec_layers": args.layers,
        "n_basis": args.n_basis,
        "dropout": args.dropout,
        "max_len": args.max_len,
        "n_views": args.n_views,
        "mask_loss_reduction": args.mask_loss,
    }
    model_changes.update({k: v for k, v in flags.items() if v is not None})
    if args.enc_layers is not None:
        if args.enc_layers < 0:
            raise ValueError(f"--enc-layers must be >= 0, got {args.enc_layers}")
        model_changes["n_enc_layers"] = args.enc_layers
    train_flags = {
        "epochs_stage1": args.epochs1,
        "epochs_stage2": args.epochs2,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "step_size": args.step_size,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "max_val_studies": args.max_val_studies,
        "eval_every": args.eval_every,
        "val_beam_size": args.val_beam_size,
        "select": args.select,
        "log": args.log,
        "token_noise": args.token_noise,
        "word_noise": args.word_noise,
    }
    train_changes.update({k: v for k, v in train_flags.items() if v is not None})
    extra = dict(train_changes.get("extra", {}))
    if args.vocab_threshold is not None:
        extra["vocab_threshold"] = args.vocab_threshold
    if args.n_crops is not None:
        extra["n_crops"] = args.n_crops
    if args.no_augment:
        extra["augment"] = False
    if args.punctuation:
        extra["punctuation"] = True
    if args.token_cache is not None:
        extra["token_cache"] = str(args.token_cache)
    if args.init_visual_embeddings is not None:
        extra["init_visual_embeddings"] = args.init_visual_embeddings
    train_changes["extra"] = extra
    if args.single_stage:
        train_changes["two_stage"] = False
    if args.bf16:
        train_changes["bf16"] = True
    if args.keep_epochs:
        train_changes["keep_epochs"] = True
    model_cfg = dataclasses.replace(preset(args.preset), **model_changes)
    return model_cfg, dataclasses.replace(TrainConfig(), **train_changes)


def run(args: argparse.Namespace) -> int:
    """Run ``uar train``; prints the best checkpoint's path."""
    from uar.train import train
    from uar.train.runlog import LoggerUnavailableError

    model_cfg, train_cfg = configs_from_args(args)
    try:
        best = train(
            args.data,
            args.out,
            model_cfg,
            train_cfg,
            visual_tokenizer_path=args.tokenizer,
            resume=args.resume,
            save_every=args.save_every,
            max_steps=args.max_steps,
            model_name=args.name,
        )
    except LoggerUnavailableError as exc:  # --log tensorboard without the tensorboard package
        print(f"uar train: error: {exc}", file=sys.stderr)
        return 2
    if best.is_file():
        print(best)
    else:
        last = args.out / "last.pt"
        hint = f"continue with --resume ({last})" if last.is_file() else "data prepared, nothing trained"
        print(f"stopped by --max-steps before the first validation: {hint}")
    return 0
