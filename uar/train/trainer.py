"""Two-stage UAR training (uar-paper.md §3) with exact resume and ``torchrun`` data parallelism.

Stage 1 optimises ``lambda_ce * L_CE + lambda_global * L_Global`` with no TIR mask in the
text-to-image attention; stage 2 starts from the best stage-1 weights and adds
``lambda_mask * L_Mask`` with the mask switched on. ``TrainConfig.two_stage=False`` runs a single
stage with everything on from the start (Table 2 row f) for ``epochs_stage1 + epochs_stage2``
epochs, so both schedules see the same number of epochs.

Each stage gets a fresh AdamW (betas, eps, weight decay, amsgrad from :class:`TrainConfig`) and a
StepLR decayed every ``step_size`` epochs by ``gamma``; gradients are clipped to ``grad_clip``
(global L2 norm). After every ``eval_every`` epochs (and the last of each stage) the model decodes
the validation split with beam search and the run keeps the weights with the best BLEU-4 (the
paper's protocol) or, with ``TrainConfig.select="ce_micro_f1"``, the best CE micro-F1 of the
labeler on the generated reports against the studies' ground-truth labels (against the labeler on
the reference reports where a study has none).

Run folder (``out_dir``), written by rank 0 only:

- ``best.safetensors``: best model so far (:func:`uar.checkpoint.save_checkpoint`), the product;
- ``stage1_best.safetensors``: best stage-1 model (two-stage runs);
- ``epochs/stage<S>-epoch<NN>.safetensors``: the weights at the end of every epoch
  (``TrainConfig.keep_epochs``), for averaging the last few (``uar export --average``);
- ``last.pt``: resume state (model, optimizer, scheduler, stage, epoch, step in epoch, best score,
  every rank's Python/NumPy/torch RNG state, the data-order generator state); written after every
  epoch, every ``save_every`` steps and when ``max_steps`` stops a run;
- ``visual_tokens.safetensors``: visual token ids of every image (LSU models), computed once;
- ``steps.csv`` / ``epochs.csv`` (or ``tensorboard/``): losses, learning rate, validation metrics,
  seconds per epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from uar import __version__
from uar.config import TrainConfig, UARConfig
from uar.train.data import batch_inputs, check_noise_share, collate, load_run_data, noisy_tokens, noisy_words
from uar.train.ddp import (
    DistInfo,
    ResumableSampler,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    gather_objects,
    init_distributed,
    wrap_model,
)
from uar.train.resume import rng_state, seed_everything, set_rng_state
from uar.train.runlog import RunLogger

log = logging.getLogger(__name__)

RESUME_FORMAT = 1
LOSS_KEYS = ("loss", "ce", "global", "mask")


@dataclass
class Progress:
    """Where a run is: everything besides weights and optimiser that ``last.pt`` must restore."""

    stage: int = 1  # 1 or 2 (a single-stage run only has stage 2)
    epoch: int = 0  # epoch index inside the current stage
    step_in_epoch: int = 0  # optimisation steps already done in the current epoch
    global_step: int = 0  # optimisation steps over the whole run
    best_score: float = -math.inf  # best validation score so far (TrainConfig.select)
    best_stage: int = 0
    best_epoch: int = -1
    stage1_best_score: float = -math.inf
    epoch_loss_sums: dict[str, float] = field(default_factory=dict)  # running sums of this epoch
    epoch_seconds: float = 0.0  # training seconds already spent in this epoch
    finished: bool = False


SELECT_METRICS = ("bleu_4", "ce_micro_f1")  # TrainConfig.select: what picks best.safetensors


def stage_plan(train_cfg: TrainConfig) -> list[tuple[int, int]]:
    """``[(stage, epochs), ...]``: ``[(1, e1), (2, e2)]`` or ``[(2, e1 + e2)]`` for a single stage."""
    if train_cfg.two_stage:
        return [(1, train_cfg.epochs_stage1), (2, train_cfg.epochs_stage2)]
    return [(2, train_cfg.epochs_stage1 + train_cfg.epochs_stage2)]


def build_optimizer(model: nn.Module, train_cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over every trainable parameter (the frozen visual tokenizer is not part of the model)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=train_cfg.lr,
        betas=train_cfg.betas,
        eps=train_cfg.eps,
        weight_decay=train_cfg.weight_decay,
        amsgrad=train_cfg.amsgrad,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: TrainConfig
) -> torch.optim.lr_scheduler.StepLR:
    """StepLR: multiply the learning rate by ``gamma`` every ``step_size`` epochs."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=train_cfg.step_size, gamma=train_cfg.gamma)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    """bf16 autocast on CPU or CUDA when ``enabled``, else a no-op context."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(
    model: nn.Module,
    visual: torch.Tensor,
    reports: torch.Tensor,
    stage: int,
    optimizer: torch.optim.Optimizer,
    *,
    grad_clip: float,
    bf16: bool,
    inputs: torch.Tensor | None = None,
) -> dict[str, float]:
    """One optimisation step; returns the loss terms as floats.

    ``model`` may be wrapped in DDP, whose backward averages gradients over ranks. ``visual`` is
    ``(B, V, L)`` token ids or ``(B, V, 1, S, S)`` images, ``reports`` ``(B, T+1)`` ids; ``inputs``
    (the shape of ``reports``) is what the decoder reads when it differs from the targets.
    """
    device = reports.device
    with autocast(device, bf16):
        out = model(visual, reports, stage=stage, inputs=inputs)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {k: float(out[k].detach()) for k in LOSS_KEYS if k in out}


def validation_ce_f1(
    generated: list[str], references: list[str], labels: list[dict[str, Any] | None]
) -> float:
    """CE micro-F1 of the labeler on ``generated`` against each study's ground-truth ``labels``,
    or against the labeler on its reference report where a study has no labels."""
    from uar.eval.ce import ce_scores
    from uar.eval.labeler import label_report

    predicted = [label_report(g) for g in generated]
    truth = [lab if lab is not None else label_report(r) for lab, r in zip(labels, references, strict=True)]
    return ce_scores(predicted, truth).micro.f1


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    model_cfg: UARConfig,
    train_cfg: TrainConfig,
    *,
    visual_tokenizer_path: str | Path | None,
    resume: bool = False,
    save_every: int = 0,
    max_steps: int | None = None,
    model_name: str = "UAR",
    progress: bool = True,
) -> Path:
    """Train UAR (or a Base / ablation variant) and return the path of ``best.safetensors``.

    Args:
        data_dir: dataset root: R2Gen layout (``annotation.json`` + images) for ``iu_xray`` and
            ``mimic_cxr``, or the MIMIC-CXR-JPG layout for ``mimic_cxr``.
        out_dir: run folder (created); see the module docstring for what it holds.
        model_cfg: architecture; ``vocab_size``, ``max_len`` and the visual-token fields are
            replaced by what the text tokenizer (built from the training split) and the visual
            tokenizer give.
        train_cfg: optimisation, schedule, seed, logging.
        visual_tokenizer_path: frozen visual tokenizer (``uar tokenizer train`` output); required for
            ``visual_encoder="lsu"``, ignored for the CNN encoder.
        resume: continue from ``out_dir/last.pt`` bit-identically (same world size).
        save_every: also write ``last.pt`` every this many optimisation steps (0: only per epoch).
        max_steps: stop (after writing ``last.pt``) once the run has done this many optimisation
            steps in total; used to split runs and by tests. ``None``: run the whole schedule.
        model_name: ``model_name`` stored in the checkpoint.
        progress: show tqdm bars on rank 0.

    Runs under ``torchrun`` join the process group (gloo on CPU, nccl on GPU); ``batch_size`` is the
    global batch, split evenly over ranks.
    """
    info = init_distributed()
    try:
        result = _Trainer(
            Path(data_dir),
            Path(out_dir),
            model_cfg,
            train_cfg,
            info,
            visual_tokenizer_path=Path(visual_tokenizer_path) if visual_tokenizer_path else None,
            save_every=save_every,
            max_steps=max_steps,
            model_name=model_name,
            progress=progress,
        ).run(resume=resume)
        # ranks leave the process group together: rank 0 may still be writing last.pt while the
        # others are done (a rank that tore gloo down and exited first was seen to abort)
        barrier(info)
        return result
    finally:
        cleanup_distributed()


class _Trainer:
    """State and loops of one training run (one per process)."""

    def __init__(
        self,
        data_dir: Path,
        out_dir: Path,
        model_cfg: UARConfig,
        train_cfg: TrainConfig,
        info: DistInfo,
        *,
        visual_tokenizer_path: Path | None,
        save_every: int,
        max_steps: int | None,
        model_name: str,
        progress: bool,
    ) -> None:
        if train_cfg.batch_size % info.world_size:
            raise ValueError(
                f"batch_size {train_cfg.batch_size} is the global batch and must be divisible by "
                f"the number of processes ({info.world_size})"
            )
        if train_cfg.select not in SELECT_METRICS:
            raise ValueError(f"select must be one of {SELECT_METRICS}, got {train_cfg.select!r}")
        check_noise_share("token", train_cfg.token_noise)  # refused before any data is read
        check_noise_share("word", train_cfg.word_noise)
        if model_cfg.visual_encoder == "lsu" and visual_tokenizer_path is None:
            raise ValueError("visual_encoder='lsu' needs a visual tokenizer (--tokenizer tok.safetensors)")
        self.data_dir = data_dir
        self.out_dir = out_dir
        self.train_cfg = train_cfg
        self.info = info
        self.save_every = save_every
        self.max_steps = max_steps
        self.model_name = model_name
        self.progress = progress and info.is_main
        self.visual_tokenizer_path = visual_tokenizer_path
        self.model_cfg = model_cfg
        self.last_path = out_dir / "last.pt"
        self.best_path = out_dir / "best.safetensors"
        self.stage1_path = out_dir / "stage1_best.safetensors"

    # ---------------------------------------------------------------- setup

    def run(self, *, resume: bool) -> Path:
        info, cfg = self.info, self.train_cfg
        if not resume and self.last_path.exists():
            raise ValueError(f"{self.out_dir} already holds a run (last.pt): use --resume or a new --out")
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        # Created first so that a missing TensorBoard fails before any data work.
        self.logger = RunLogger(self.out_dir, cfg.log) if info.is_main else None
        barrier(info)
        resume_state: dict[str, Any] | None = None
        if resume:
            if not self.last_path.exists():
                raise FileNotFoundError(f"--resume: no {self.last_path}")
            resume_state = torch.load(self.last_path, map_location="cpu", weights_only=False)
            if resume_state.get("format") != RESUME_FORMAT:
                raise ValueError(f"{self.last_path}: unsupported resume format {resume_state.get('format')}")
            if resume_state["world_size"] != info.world_size:
                raise ValueError(
                    f"{self.last_path} was written by {resume_state['world_size']} processes; "
                    f"resume with the same number (now {info.world_size}) for an exact continuation"
                )
            if resume_state["train_config"] != cfg.to_dict():
                log.warning("resuming with a different TrainConfig than the run was started with")

        seed_everything(cfg.seed + info.rank)
        self.visual_tok = self._load_visual_tokenizer()
        self._load_data(resume_state)
        self.model_cfg = self._fit_model_config(self.model_cfg)
        if resume_state is not None and resume_state["model_config"] != self.model_cfg.to_dict():
            raise ValueError(f"{self.last_path} was written for a different model configuration")

        from uar.model import UAR

        self.model = UAR(self.model_cfg).to(info.device)
        if cfg.extra.get("init_visual_embeddings", "random") == "codebook" and resume_state is None:
            if self.visual_tok is None:
                raise ValueError(
                    "--init-visual-embeddings codebook needs an LSU model and its visual tokenizer"
                )
            self.model.lsu.init_visual_from_codes(self.visual_tok.code_vectors().to(info.device))
        self.progress_state = Progress(stage=stage_plan(cfg)[0][0])
        self.stage1_best_state: dict[str, torch.Tensor] | None = None
        self.sampler = ResumableSampler(
            self.train_ds, seed=cfg.seed, rank=info.rank, world_size=info.world_size
        )
        if resume_state is not None:
            self.model.load_state_dict(resume_state["model"])
            self.progress_state = Progress(**resume_state["progress"])
            self.stage1_best_state = resume_state["stage1_best_model"]
            self.sampler.load_state_dict(
                resume_state["sampler"], mid_epoch=self.progress_state.step_in_epoch > 0
            )
        if info.is_main:
            n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            log.info(
                "training %s: %d train / %d val studies, %.2fM parameters, %d process(es) on %s",
                self.model_name,
                len(self.train_ds),
                len(self.val_ds),
                n_params / 1e6,
                info.world_size,
                info.device,
            )
        try:
            self._loop(resume_state)
        finally:
            if self.logger is not None:
                self.logger.close()
        if info.is_main and self.progress_state.finished:
            self._calibrate_best()
        return self.best_path

    def _calibrate_best(self) -> None:
        """Store the input-domain check (uar.ood) in best.safetensors once the schedule is done.

        Statistics from the training split, threshold from the validation split; a data layout
        without ``annotation.json`` (MIMIC-CXR-JPG) or a failing fit leaves the checkpoint without a
        check, with a warning naming ``uar calibrate``.
        """
        from uar.calibration import calibrate_checkpoint, describe, has_input_check

        if not self.best_path.is_file() or has_input_check(self.best_path):
            return
        if not (self.data_dir / "annotation.json").is_file():
            log.warning("no annotation.json in %s: best.safetensors has no input check", self.data_dir)
            return
        try:
            # LSU: the token cache holds every training and validation view's ids already
            cache = getattr(self.train_ds, "token_cache", None)
            _, check = calibrate_checkpoint(self.best_path, self.data_dir, token_cache=cache)
        except (ValueError, FileNotFoundError) as exc:
            log.warning("input check not calibrated (%s); run `uar calibrate` later", exc)
            return
        log.info("%s", describe(check))

    def _load_visual_tokenizer(self) -> nn.Module | None:
        if self.model_cfg.visual_encoder != "lsu":
            return None
        from uar.visual.train import load_visual_tokenizer

        assert self.visual_tokenizer_path is not None
        # Stays on the CPU: it only fills the token cache (CPU images) and goes into checkpoints.
        tok = load_visual_tokenizer(self.visual_tokenizer_path).eval()
        for p in tok.parameters():
            p.requires_grad_(False)
        return tok

    def _load_data(self, resume_state: dict[str, Any] | None) -> None:
        """Datasets, text tokenizer (train split, or the resumed run's) and the visual-token cache."""
        from uar.data.r2gen import VisualTokenCache
        from uar.text.tokenizer import TextTokenizer

        cfg, info = self.train_cfg, self.info
        cache = None
        # one cache file may serve several runs of the same data and tokenizer (--token-cache)
        cache_path = Path(cfg.extra.get("token_cache") or self.out_dir / "visual_tokens.safetensors")
        if self.visual_tok is not None:
            # Without augmentation the training items use the full view only: no crops to tokenise.
            n_crops = int(cfg.extra.get("n_crops", 5)) if cfg.extra.get("augment", True) else 0
            # Only rank 0 reads or writes the file before the barrier below.
            cache = VisualTokenCache(self.visual_tok, cache_path if info.is_main else None, n_crops=n_crops)
        threshold = cfg.extra.get("vocab_threshold")
        data = load_run_data(
            self.data_dir,
            dataset=cfg.dataset,
            n_views=self.model_cfg.n_views,
            image_size=self.visual_tok.config.image_size if self.visual_tok else self.model_cfg.image_size,
            max_len=self.model_cfg.max_len,
            threshold=int(threshold) if threshold is not None else None,
            augment=bool(cfg.extra.get("augment", True)),
            punctuation=bool(cfg.extra.get("punctuation", False)),
            seed=cfg.seed,
            text_tokenizer=TextTokenizer.from_dict(resume_state["text_tokenizer"]) if resume_state else None,
            token_cache=cache,
        )
        if cache is not None:
            if info.is_main:  # one process tokenises every image once; the others read the file
                data.train.precompute_tokens(progress=self.progress)
                data.val.precompute_tokens(progress=self.progress)
            barrier(info)
            if not info.is_main:
                cache = VisualTokenCache(self.visual_tok, cache_path, n_crops=cache.n_crops)
                data.train.token_cache = data.val.token_cache = cache
        self.text_tok = data.text_tokenizer
        self.train_ds = data.train
        self.val_ds: Dataset = data.val
        if cfg.max_val_studies is not None:
            self.val_ds = Subset(data.val, range(min(cfg.max_val_studies, len(data.val))))
        if len(self.train_ds) == 0 or len(self.val_ds) == 0:
            raise ValueError(f"{self.data_dir}: empty train ({len(self.train_ds)}) or val split")

    def _fit_model_config(self, cfg: UARConfig) -> UARConfig:
        """Take vocabulary size from the text tokenizer and token grid / codebook from the visual one."""
        changes: dict[str, Any] = {"vocab_size": self.text_tok.vocab_size, "max_len": self.text_tok.max_len}
        if self.visual_tok is not None:
            vq = self.visual_tok.config
            changes["visual_vocab_size"] = vq.codebook_size
            changes["image_size"] = vq.image_size
            changes["tokens_per_view"] = (vq.image_size // vq.downsample) ** 2
        return dataclasses.replace(cfg, **changes)

    # ---------------------------------------------------------------- loops

    def _loop(self, resume_state: dict[str, Any] | None) -> None:
        cfg, info, prog = self.train_cfg, self.info, self.progress_state
        plan = stage_plan(cfg)
        if prog.finished and prog.stage == plan[-1][0] and prog.epoch < plan[-1][1]:
            # A finished run resumed with more epochs in its last stage continues that stage.
            log.info("extending the finished run to %d epochs of stage %d", plan[-1][1], prog.stage)
            prog.finished = False
        if prog.finished or (self.max_steps is not None and prog.global_step >= self.max_steps):
            return
        stages = [s for s, _ in plan]
        # One DDP wrapper for the whole run: its gradient hooks live on the parameters, and a second
        # wrapper would leave the first one's hooks firing until garbage collection.
        ddp_model = wrap_model(self.model, info)
        for stage, n_epochs in plan:
            if stages.index(stage) < stages.index(prog.stage):
                continue
            if stage != prog.stage:  # entering a new stage (never the case on resume inside it)
                prog.stage, prog.epoch, prog.step_in_epoch = stage, 0, 0
                resume_state = None
                if self.stage1_best_state is not None:
                    self.model.load_state_dict(self.stage1_best_state)
            self.model.stage = stage
            optimizer = build_optimizer(self.model, cfg)
            scheduler = build_scheduler(optimizer, cfg)
            if resume_state is not None:
                optimizer.load_state_dict(resume_state["optimizer"])
                scheduler.load_state_dict(resume_state["scheduler"])
                set_rng_state(resume_state["rng"][info.rank])
                resume_state = None
            while prog.epoch < n_epochs:
                stopped = self._epoch(ddp_model, optimizer, scheduler, stage, n_epochs)
                if stopped:
                    return
            if stage == 1:
                barrier(info)
        prog.finished = True
        self._save_resume(optimizer, scheduler)
        if info.is_main:
            log.info(
                "finished: best val %s %.4f (stage %d, epoch %d) -> %s",
                cfg.select,
                prog.best_score,
                prog.best_stage,
                prog.best_epoch,
                self.best_path,
            )

    def _loader(self, stage: int, epoch: int) -> DataLoader:
        cfg, prog = self.train_cfg, self.progress_state
        per_rank = cfg.batch_size // self.info.world_size
        self.sampler.start_epoch(epoch + 1000 * stage, start_index=prog.step_in_epoch * per_rank)
        # A private generator: creating the iterator must not draw from the global torch RNG,
        # or a resumed run would shift every later random number.
        gen = torch.Generator()
        gen.manual_seed(cfg.seed * 7919 + 1000 * stage + epoch)
        self.train_ds.set_epoch(1000 * stage + epoch)  # augmentation stream of this epoch

        return DataLoader(
            self.train_ds,
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate,
            generator=gen,
            pin_memory=self.info.device.type == "cuda",
        )

    def _epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.StepLR,
        stage: int,
        n_epochs: int,
    ) -> bool:
        """Run (the rest of) one epoch; returns True when ``max_steps`` stopped the run."""
        cfg, info, prog = self.train_cfg, self.info, self.progress_state
        loader = self._loader(stage, prog.epoch)
        self.model.train()
        total = math.ceil(self.sampler.num_samples / loader.batch_size)  # type: ignore[operator]
        bar = tqdm(
            total=total,
            initial=prog.step_in_epoch,
            desc=f"stage {stage} epoch {prog.epoch + 1}/{n_epochs}",
            disable=not self.progress,
            leave=False,
        )
        started = time.perf_counter()
        for batch in loader:
            visual, reports = self._inputs(batch)
            # a fresh draw each step, the same again when a run resumes
            noise = torch.Generator().manual_seed(cfg.seed * 1_000_003 + prog.global_step)
            if cfg.token_noise > 0 and not visual.is_floating_point():
                visual = noisy_tokens(visual, cfg.token_noise, self.model_cfg.visual_vocab_size, noise)
            inputs = noisy_words(reports, cfg.word_noise, noise) if cfg.word_noise > 0 else None
            losses = train_step(
                model,
                visual,
                reports,
                stage,
                optimizer,
                grad_clip=cfg.grad_clip,
                bf16=cfg.bf16,
                inputs=inputs,
            )
            prog.step_in_epoch += 1
            prog.global_step += 1
            for k, v in losses.items():
                prog.epoch_loss_sums[k] = prog.epoch_loss_sums.get(k, 0.0) + v
            lr = optimizer.param_groups[0]["lr"]
            if self.logger is not None:
                self.logger.step(
                    {"stage": stage, "epoch": prog.epoch, "step": prog.step_in_epoch,
                     "global_step": prog.global_step, "lr": lr, **losses}
                )  # fmt: skip
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.3f}")
            stop = self.max_steps is not None and prog.global_step >= self.max_steps
            if stop or (self.save_every and prog.global_step % self.save_every == 0):
                prog.epoch_seconds += time.perf_counter() - started
                started = time.perf_counter()
                self._save_resume(optimizer, scheduler)
            if stop:
                bar.close()
                return True
        bar.close()
        seconds = prog.epoch_seconds + time.perf_counter() - started
        scheduler.step()
        means = all_reduce_mean(
            {k: v / max(prog.step_in_epoch, 1) for k, v in prog.epoch_loss_sums.items()}, info
        )
        row: dict[str, Any] = {
            "stage": stage,
            "epoch": prog.epoch,
            "global_step": prog.global_step,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            **{f"train_{k}": v for k, v in means.items()},
        }
        last_of_stage = prog.epoch + 1 == n_epochs
        if (prog.epoch + 1) % max(cfg.eval_every, 1) == 0 or last_of_stage:
            val_started = time.perf_counter()
            metrics = self._validate()
            row["val_seconds"] = round(time.perf_counter() - val_started, 3)
            row.update({f"val_{k}": metrics[k] for k in ("bleu_4", "bleu_1", "meteor", "rouge_l", "cider",
                        "ce_micro_f1") if k in metrics})  # fmt: skip
            self._maybe_save_best(stage, metrics)
        row[f"best_{cfg.select}"] = prog.best_score if prog.best_score > -math.inf else None
        if self.logger is not None:
            self.logger.epoch(row)
            log.info(
                "stage %d epoch %d: loss %.4f, val BLEU-4 %s, val CE micro-F1 %s, %.1f s",
                stage,
                prog.epoch + 1,
                means.get("loss", float("nan")),
                f"{row['val_bleu_4']:.4f}" if "val_bleu_4" in row else "-",
                f"{row['val_ce_micro_f1']:.4f}" if "val_ce_micro_f1" in row else "-",
                seconds,
            )
        if cfg.keep_epochs:
            done = {"stage": stage, "epoch": prog.epoch + 1, "global_step": prog.global_step}
            self._save_checkpoint(self.epoch_path(stage, prog.epoch + 1), {**row, **done})
        prog.epoch += 1
        prog.step_in_epoch = 0
        prog.epoch_loss_sums = {}
        prog.epoch_seconds = 0.0
        self._save_resume(optimizer, scheduler)
        return False

    def _inputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs on the device: visual ``(B, V, L)`` ids or ``(B, V, 1, S, S)`` images, reports."""
        return batch_inputs(batch, self.model_cfg, self.visual_tok, self.info.device)

    # ---------------------------------------------------------------- validation and saving

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Beam-search the validation split (sharded over ranks); corpus metrics on rank 0.

        References are the tokenised-then-decoded reports (R2Gen convention: what the model could
        produce at best, with ``<unk>`` and the ``max_len`` cut).
        """
        from uar.decoding import beam_search
        from uar.eval.metrics import nlg_metrics

        info, cfg = self.info, self.train_cfg
        shard = Subset(self.val_ds, range(info.rank, len(self.val_ds), info.world_size))
        loader = DataLoader(
            shard,
            batch_size=max(cfg.batch_size // info.world_size, 1),
            shuffle=False,
            num_workers=cfg.num_workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(0),
        )
        self.model.eval()
        rows: list[tuple[str, str, dict[str, Any] | None]] = []
        for batch in tqdm(loader, desc="validation", disable=not self.progress, leave=False):
            visual, reports = self._inputs(batch)
            with autocast(info.device, cfg.bf16):
                hyps = beam_search(
                    self.model, visual, beam_size=cfg.val_beam_size, max_len=self.model_cfg.max_len
                )
            for hyp, ref, labels in zip(hyps, reports.tolist(), batch.labels, strict=True):
                tok = self.text_tok
                rows.append((tok.scored(tok.decode(ref[1:])), tok.scored(tok.decode(hyp)), labels))
        self.model.train()
        all_rows = [r for part in gather_objects(rows, info) for r in part]
        metrics: dict[str, float] = {}
        if info.is_main:
            refs, hyps, labels = zip(*all_rows, strict=True)
            metrics = nlg_metrics(list(refs), list(hyps), meteor=bool(cfg.extra.get("val_meteor", False)))
            metrics["ce_micro_f1"] = validation_ce_f1(list(hyps), list(refs), list(labels))
        return broadcast_object(metrics, info)

    def _maybe_save_best(self, stage: int, metrics: dict[str, float]) -> None:
        prog = self.progress_state
        score = float(metrics[self.train_cfg.select])
        extra = {"stage": stage, "epoch": prog.epoch + 1, "global_step": prog.global_step}
        if stage == 1 and score > prog.stage1_best_score:
            prog.stage1_best_score = score
            self.stage1_best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self._save_checkpoint(self.stage1_path, {**metrics, **extra})
        if score > prog.best_score:
            prog.best_score, prog.best_stage, prog.best_epoch = score, stage, prog.epoch + 1
            self._save_checkpoint(self.best_path, {**metrics, **extra})

    def epoch_path(self, stage: int, epoch: int) -> Path:
        """Where ``TrainConfig.keep_epochs`` writes the weights at the end of ``epoch`` (1-based)."""
        return self.out_dir / "epochs" / f"stage{stage}-epoch{epoch:02d}.safetensors"

    def _save_checkpoint(self, path: Path, metrics: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        from uar.checkpoint import save_checkpoint

        save_checkpoint(
            path,
            self.model,
            self.text_tok,
            self.visual_tok,
            name=self.model_name,
            version=__version__,
            train_cfg=self.train_cfg,
            metrics=metrics,
        )

    def _save_resume(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Write ``last.pt`` atomically (rank 0); every rank contributes its RNG state."""
        rngs = gather_objects(rng_state(), self.info)
        if not self.info.is_main:
            return
        state = {
            "format": RESUME_FORMAT,
            "world_size": self.info.world_size,
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": dataclasses.asdict(self.progress_state),
            "stage1_best_model": self.stage1_best_state,
            "rng": rngs,
            "sampler": self.sampler.state_dict(),
            "text_tokenizer": self.text_tok.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "train_config": self.train_cfg.to_dict(),
        }
        tmp = self.last_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.last_path)
