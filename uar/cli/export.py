"""``uar export``: rewrite a trained checkpoint for shipping (half precision, new name/version, metrics).

Examples::

    uar export runs/default/uar/best.safetensors uar/default_model/uar-default.safetensors --fp16 \\
        --name uar-default --version 0.1.0 --metrics runs/default/uar-test.json

The model weights are stored in float16 with ``--fp16`` (half the size; loaded back as float32); the
visual tokenizer stays float32 so its token ids do not change. ``--weights-from RUN/last.pt`` ships the
weights of a run's resume file (the model at the end of its last epoch) instead of the checkpoint's
own, with the checkpoint's configuration and tokenizers; both must come from the same run.
``--average FILE ...`` ships the mean of the weights of several files of the same run (checkpoint
averaging: e.g. the last five epochs a ``uar train --keep-epochs`` run wrote to ``epochs/``; each
FILE is a checkpoint or a resume file), again with the input checkpoint's configuration and
tokenizers::

    uar export runs/default/long/uar/best.safetensors final.safetensors \
        --average runs/default/long/uar/epochs/stage2-epoch{16,17,18,19,20}.safetensors

The input-domain check (docs/ood.md) is copied from the input checkpoint when the weights are its
own; with ``--weights-from`` it no longer fits them and is dropped. ``--calibration-data DIR``
(the model's R2Gen training data) calibrates the exported file itself, weights as stored (fp16).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import torch

from uar.checkpoint import average_weights, load_checkpoint, save_checkpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="rewrite a checkpoint for shipping (fp16, name, version, metrics)",
        description="Copy a UAR checkpoint, optionally in half precision, with a new name and version.",
    )
    p.add_argument("checkpoint", type=Path, help="input checkpoint (.safetensors)")
    p.add_argument("out", type=Path, help="output checkpoint (.safetensors)")
    p.add_argument("--fp16", action="store_true", help="store the model weights in float16")
    p.add_argument("--name", help="model name to store (default: keep)")
    p.add_argument("--version", help="model version to store (default: keep)")
    p.add_argument(
        "--metrics", type=Path, help="JSON file (e.g. a `uar evaluate` result) stored as the metrics"
    )
    p.add_argument(
        "--weights-from",
        type=Path,
        metavar="LAST_PT",
        help="take the model weights from this resume file (a run's last.pt) of the same run",
    )
    p.add_argument(
        "--average",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="ship the mean of the model weights of these checkpoints or resume files of the same run",
    )
    p.add_argument(
        "--calibration-data",
        type=Path,
        metavar="DIR",
        help="calibrate the input-domain check of the exported file on this R2Gen dataset (train + val)",
    )
    p.add_argument(
        "--token-cache",
        type=Path,
        metavar="FILE",
        help="LSU models, with --calibration-data: read the views' token ids from this cache of the"
        " training run instead of recomputing them",
    )
    p.set_defaults(func=run)


def load_resume_weights(path: Path, ckpt_config: dict[str, object]) -> dict[str, torch.Tensor]:
    """The model state dict stored in a training resume file, checked against the checkpoint's config."""
    from uar.train.trainer import RESUME_FORMAT

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a training resume file (last.pt): {type(exc).__name__}") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ValueError(f"{path} is not a training resume file (last.pt)")
    if state["model_config"] != ckpt_config:
        raise ValueError(f"{path} was written for another model configuration than the checkpoint")
    return state["model"]


def load_run_weights(path: Path, ckpt_config: dict[str, object]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint (``.safetensors``) or resume file (``last.pt``), checked
    against the configuration of the checkpoint they are to be shipped in."""
    if path.suffix != ".safetensors":
        return load_resume_weights(path, ckpt_config)
    other = load_checkpoint(path)
    if other.cfg.to_dict() != ckpt_config:
        raise ValueError(f"{path} was written for another model configuration than the checkpoint")
    return other.model.state_dict()


def run(args: argparse.Namespace) -> int:
    """Load, convert and write the checkpoint; returns the exit code."""
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        print(f"uar export: {exc}", file=sys.stderr)
        return 2
    if args.weights_from is not None and args.average:
        print("uar export: --weights-from and --average exclude each other", file=sys.stderr)
        return 2
    new_weights = args.weights_from is not None or bool(args.average)
    try:
        if args.weights_from is not None:
            ckpt.model.load_state_dict(load_resume_weights(args.weights_from, ckpt.cfg.to_dict()))
        elif args.average:
            states = [load_run_weights(p, ckpt.cfg.to_dict()) for p in args.average]
            ckpt.model.load_state_dict(average_weights(states))
    except (FileNotFoundError, ValueError) as exc:
        print(f"uar export: {exc}", file=sys.stderr)
        return 2
    input_check = ckpt.input_check
    if new_weights and input_check is not None:
        input_check = None
        if args.calibration_data is None:
            print(
                "uar export: the input check does not fit the new weights and is dropped;"
                " pass --calibration-data DIR or run `uar calibrate`",
                file=sys.stderr,
            )
    metrics = ckpt.meta["metrics"]
    if args.metrics is not None:
        metrics = json.loads(args.metrics.read_text(encoding="utf-8"))
    out = save_checkpoint(
        args.out,
        ckpt.model,
        ckpt.text_tokenizer,
        ckpt.visual_tokenizer,
        name=args.name or ckpt.meta["model_name"],
        version=args.version or ckpt.meta["model_version"],
        train_cfg=ckpt.meta["train_config"],
        metrics=metrics,
        dtype=torch.float16 if args.fp16 else None,
        input_check=input_check,
    )
    if args.calibration_data is not None:
        from uar.calibration import calibrate_checkpoint, describe

        _, check = calibrate_checkpoint(out, args.calibration_data, token_cache=args.token_cache)
        print(describe(check))
    print(f"{out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0
