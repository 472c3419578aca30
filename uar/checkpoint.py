"""The UAR checkpoint: one ``.safetensors`` file with everything inference needs.

Tensors: ``model.*`` (the :class:`uar.model.UAR` state dict) and ``visual_tokenizer.*`` (the frozen
:mod:`uar.visual.kinds`: semantic or pixel, absent for the Base CNN model). Metadata (JSON strings):

=========================  ===============================================================
``format_version``         ``"1"``; files from a newer format are refused with a clear error
``uar_config``             :meth:`uar.config.UARConfig.to_dict`
``text_tokenizer``         :meth:`uar.text.tokenizer.TextTokenizer.to_dict`
``visual_tokenizer_config`` ``SemanticConfig`` (``kind`` "semantic") or ``VQConfig`` fields;
                           ``null`` for Base
``model_name``             e.g. ``"uar-iu-xray"``
``model_version``          e.g. ``"0.1.0"``
``train_config``           :meth:`uar.config.TrainConfig.to_dict` or ``null``
``metrics``                e.g. validation / test scores, ``{}`` when none
``input_check``            optional: :meth:`uar.ood.InputCheck.metadata` (threshold, percentile,
                           data), with tensors ``input_check.*``; absent = no input-domain check
=========================  ===============================================================

``dtype=torch.float16`` stores the model's floating tensors in half precision (half the file size);
they are loaded back as float32. The visual tokenizer always stays float32 so its token ids do not
change. Training-resume state (optimizer, scheduler, RNG) is not part of this file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from uar.config import TrainConfig, UARConfig
from uar.grounding import DEFAULT_SMOOTHING, check_smoothing
from uar.model import UAR
from uar.ood import CODE_MEAN, InputCheck, check_feature_name
from uar.ood import TENSOR_PREFIX as INPUT_CHECK_PREFIX
from uar.text.tokenizer import TextTokenizer
from uar.visual.kinds import AnyVisualTokenizer, build_visual_tokenizer

FORMAT_VERSION = 1
MODEL_PREFIX = "model."
VISUAL_PREFIX = "visual_tokenizer."
METADATA_KEYS = (
    "format_version",
    "uar_config",
    "text_tokenizer",
    "visual_tokenizer_config",
    "model_name",
    "model_version",
    "train_config",
    "metrics",
)
INPUT_CHECK_KEY = "input_check"  # optional metadata key (older checkpoints lack it)
GROUNDING_KEY = "grounding"  # optional: the decoder heads and smoothing grounding maps use (uar.grounding)


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``model`` and ``visual_tokenizer`` are in eval mode, on the CPU."""

    cfg: UARConfig
    model: UAR
    text_tokenizer: TextTokenizer
    visual_tokenizer: AnyVisualTokenizer | None
    meta: dict[str, Any]  # model_name, model_version, train_config, metrics, format_version
    input_check: InputCheck | None = None  # None: the model has no input-domain check
    grounding: dict[str, Any] | None = None  # "heads", "smoothing" and how they were chosen


def _tensors(module: torch.nn.Module, prefix: str, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        t = value.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[prefix + key] = t.contiguous().clone()
    return out


def save_checkpoint(
    path: str | Path,
    model: UAR,
    text_tok: TextTokenizer,
    visual_tok: AnyVisualTokenizer | None,
    *,
    name: str,
    version: str,
    train_cfg: TrainConfig | None = None,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    input_check: InputCheck | None = None,
) -> Path:
    """Write ``model`` (+ tokenizers) to the single safetensors file ``path``; returns the path.

    ``visual_tok`` is required for LSU models and must be None for the Base CNN model. ``dtype``
    (e.g. ``torch.float16``) converts the model's floating tensors for storage. ``input_check``
    (calibrated for these weights, :mod:`uar.ood`) is stored in float32 whatever ``dtype``.
    """
    cfg = model.cfg
    if text_tok.vocab_size != cfg.vocab_size:
        raise ValueError(f"text tokenizer has {text_tok.vocab_size} ids but the model {cfg.vocab_size}")
    if cfg.visual_encoder == "lsu" and visual_tok is None:
        raise ValueError("an LSU model needs its visual tokenizer in the checkpoint")
    if cfg.visual_encoder == "cnn" and visual_tok is not None:
        raise ValueError("a CNN (Base) model takes images, not a visual tokenizer")
    tensors = _tensors(model, MODEL_PREFIX, dtype)
    vq_cfg = None
    if visual_tok is not None:
        vq = visual_tok.config
        if (vq.codebook_size, vq.image_size, vq.tokens_per_image) != (
            cfg.visual_vocab_size,
            cfg.image_size,
            cfg.tokens_per_view,
        ):
            ours = f"{vq.codebook_size} codes, {vq.image_size} px, {vq.tokens_per_image} tokens"
            theirs = f"{cfg.visual_vocab_size} codes, {cfg.image_size} px, {cfg.tokens_per_view} tokens"
            raise ValueError(f"visual tokenizer ({ours}) does not match the model ({theirs} per view)")
        tensors.update(_tensors(visual_tok, VISUAL_PREFIX, None))
        vq_cfg = visual_tok.config.to_dict()
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "uar_config": json.dumps(cfg.to_dict()),
        "text_tokenizer": json.dumps(text_tok.to_dict()),
        "visual_tokenizer_config": json.dumps(vq_cfg),
        "model_name": name,
        "model_version": version,
        "train_config": json.dumps(train_cfg.to_dict() if train_cfg is not None else None),
        "metrics": json.dumps(metrics or {}),
    }
    if input_check is not None:
        _check_fits(input_check, cfg, _tokenizer_code_dim(visual_tok))
        tensors.update(input_check.tensors())
        metadata[INPUT_CHECK_KEY] = input_check.metadata()
    return _write(path, tensors, metadata)


def average_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of model state dicts of one architecture (checkpoint averaging).

    Floating tensors are averaged in float32; integer tensors (buffers) must be equal in every state
    and are kept. Raises ``ValueError`` when there is no state or the states' keys, shapes or integer
    buffers differ.
    """
    if not states:
        raise ValueError("no weights to average")
    first = states[0]
    out: dict[str, torch.Tensor] = {}
    for i, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            raise ValueError(f"weights {i} have other tensors than weights 1")
    for key, value in first.items():
        group = [state[key] for state in states]
        if any(t.shape != value.shape for t in group):
            raise ValueError(f"tensor {key!r} has different shapes in the weights to average")
        if value.is_floating_point():
            out[key] = torch.stack([t.float() for t in group]).mean(dim=0).to(value.dtype)
        elif all(torch.equal(t, value) for t in group):
            out[key] = value.clone()
        else:
            raise ValueError(f"integer tensor {key!r} differs between the weights to average")
    return out


def _write(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (temporary file, then rename); a replaced file keeps its
    permission bits (a node running as another user must still read a recalibrated model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    if path.exists():
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    tmp.replace(path)
    return path


def _check_fits(check: InputCheck, cfg: UARConfig, code_dim: int | None) -> None:
    """``ValueError`` unless the check's statistics fit the model: ``(n_views, d_model)`` for the
    embedding feature, ``(n_views, code_dim)`` for the code-vector feature (``code_dim``: the visual
    tokenizer's code vector size, None for a model without one)."""
    if check_feature_name(check.feature) == CODE_MEAN:
        if code_dim is None:
            raise ValueError("a code-vector input check needs a model with a visual tokenizer")
        dim, what = code_dim, f"code vectors of {code_dim}"
    else:
        dim, what = cfg.d_model, f"d_model {cfg.d_model}"
    if tuple(check.mean.shape) != (cfg.n_views, dim):
        raise ValueError(
            f"input check statistics {tuple(check.mean.shape)} do not fit the model"
            f" ({cfg.n_views} views, {what})"
        )


def _tokenizer_code_dim(visual_tok: AnyVisualTokenizer | None) -> int | None:
    """Code vector size of a loaded visual tokenizer, None without one."""
    return None if visual_tok is None else int(visual_tok.code_vectors().shape[1])


def _code_dim(tensors: dict[str, torch.Tensor]) -> int | None:
    """Code vector size of the stored visual tokenizer (semantic or VQ-VAE codebook), None without one."""
    for key in (VISUAL_PREFIX + "codebook", VISUAL_PREFIX + "quantizer.codebook"):
        if key in tensors:
            return int(tensors[key].shape[1])
    return None


def write_input_check(path: str | Path, check: InputCheck | None, out: str | Path | None = None) -> Path:
    """Store ``check`` in the checkpoint ``path`` (replacing any earlier one; ``None`` removes it).

    Every other tensor and metadata entry is copied byte for byte (same weights, same reports);
    the result goes to ``out`` (default: ``path`` itself, replaced atomically).
    """
    metadata = dict(read_metadata(path))
    cfg = UARConfig.from_dict(json.loads(metadata["uar_config"]))
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith(INPUT_CHECK_PREFIX)}
    metadata.pop(INPUT_CHECK_KEY, None)
    if check is not None:
        _check_fits(check, cfg, _code_dim(tensors))
        tensors.update(check.tensors())
        metadata[INPUT_CHECK_KEY] = check.metadata()
    return _write(out if out is not None else path, tensors, metadata)


def write_grounding(path: str | Path, grounding: dict[str, Any], out: str | Path | None = None) -> Path:
    """Store the grounding heads and smoothing (``{"heads": [[layer, head], ...], "smoothing": s, ...}``)
    in the checkpoint ``path``; every tensor and other metadata entry is copied byte for byte; the
    result goes to ``out`` (default: ``path``, replaced atomically)."""
    metadata = dict(read_metadata(path))
    cfg = UARConfig.from_dict(json.loads(metadata["uar_config"]))
    _check_heads(grounding, cfg)
    metadata[GROUNDING_KEY] = json.dumps(grounding)
    return _write(out if out is not None else path, load_file(str(path)), metadata)


def _check_heads(grounding: dict[str, Any], cfg: UARConfig) -> None:
    heads = grounding.get("heads")
    if not isinstance(heads, list) or not heads:
        raise ValueError("grounding metadata needs a non-empty list of [layer, head] pairs")
    for pair in heads:
        ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair)
        if not ok or not (0 <= pair[0] < cfg.n_dec_layers and 0 <= pair[1] < cfg.n_heads):
            raise ValueError(
                f"grounding head {pair!r} is not in the model's {cfg.n_dec_layers} x {cfg.n_heads}"
            )
    check_smoothing(grounding.get("smoothing", DEFAULT_SMOOTHING))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The raw metadata strings of a checkpoint, after checking its format version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a safetensors checkpoint: {exc}") from exc
    if "format_version" not in metadata:
        raise ValueError(f"{path} is a safetensors file but not a UAR checkpoint (no format_version)")
    try:
        version = int(metadata["format_version"])
    except ValueError as exc:
        raise ValueError(f"{path}: bad format_version {metadata['format_version']!r}") from exc
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {version}, newer than this uar supports ({FORMAT_VERSION});"
            " upgrade uar-report-node"
        )
    if version < 1:
        raise ValueError(f"{path}: unsupported checkpoint format {version}")
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"{path}: checkpoint metadata lacks {missing}")
    return metadata


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {
        k[len(prefix) :]: v.float() if v.is_floating_point() else v
        for k, v in tensors.items()
        if k.startswith(prefix)
    }


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (model and tokenizers, eval mode, CPU).

    Raises ``FileNotFoundError`` when ``path`` does not exist and ``ValueError`` when it is not a UAR
    checkpoint, comes from a newer format, or its tensors do not match its configuration.
    """
    metadata = read_metadata(path)
    cfg = UARConfig.from_dict(json.loads(metadata["uar_config"]))
    text_tok = TextTokenizer.from_dict(json.loads(metadata["text_tokenizer"]))
    tensors = load_file(str(path))
    model = UAR(cfg)
    try:
        model.load_state_dict(_strip(tensors, MODEL_PREFIX))
    except RuntimeError as exc:
        raise ValueError(f"{path}: model tensors do not match its uar_config: {exc}") from exc
    model.eval()
    visual_tok = None
    vq = json.loads(metadata["visual_tokenizer_config"])
    if vq is not None:
        visual_tok = build_visual_tokenizer(vq)
        try:
            visual_tok.load_state_dict(_strip(tensors, VISUAL_PREFIX))
        except RuntimeError as exc:
            raise ValueError(f"{path}: visual tokenizer tensors do not match its config: {exc}") from exc
        visual_tok.eval()
    train_cfg = json.loads(metadata["train_config"])
    meta = {
        "format_version": int(metadata["format_version"]),
        "model_name": metadata["model_name"],
        "model_version": metadata["model_version"],
        "train_config": TrainConfig.from_dict(train_cfg) if train_cfg is not None else None,
        "metrics": json.loads(metadata["metrics"]),
    }
    input_check = None
    if INPUT_CHECK_KEY in metadata:
        try:
            input_check = InputCheck.from_checkpoint(metadata[INPUT_CHECK_KEY], tensors)
            _check_fits(input_check, cfg, _tokenizer_code_dim(visual_tok))
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: bad input check: {exc}") from exc
    grounding = None
    if GROUNDING_KEY in metadata:
        try:
            grounding = json.loads(metadata[GROUNDING_KEY])
            if not isinstance(grounding, dict):
                raise ValueError("not an object")
            _check_heads(grounding, cfg)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: bad grounding metadata: {exc}") from exc
    return Checkpoint(cfg, model, text_tok, visual_tok, meta, input_check, grounding)
