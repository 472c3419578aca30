"""Typed configuration for the UAR model, its ablations and its training.

Every switch of the paper's ablation tables (uar-paper.md Tables 2-4) is a field of
:class:`UARConfig`; :func:`preset` names the rows of those tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

VisualEncoder = Literal["lsu", "cnn"]
BasisKind = Literal["orthogonal", "uniform", "normal"]
Fusion = Literal["dual_gate", "none", "addition"]
Dataset = Literal["iu_xray", "mimic_cxr"]
_T = TypeVar("_T")


def from_known_keys(cls: type[_T], d: dict[str, Any]) -> _T:
    """``cls(**d)`` for a config dataclass, rejecting keys it has no field for with a clear error
    ("unknown UARConfig keys: [...]")."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**d)


@dataclass(frozen=True)
class UARConfig:
    """Architecture of UAR and of its Base / ablation variants.

    Defaults follow uar-paper.md §2 and the open-decision table §6 (R2GenCMN sizes).
    """

    # text side
    vocab_size: int = 1000  # |V_R| including pad/bos/eos (id 0) and <unk>
    max_len: int = 60  # T_max: report tokens, 60 IU-Xray / 100 MIMIC-CXR
    # visual side
    n_views: int = 2  # 2 = frontal + lateral (IU-Xray), 1 = frontal only (MIMIC-CXR)
    image_size: int = 112  # pixels, square input to the visual tokenizer / CNN
    visual_encoder: VisualEncoder = "lsu"  # "lsu": discrete visual tokens; "cnn": Base CNN features
    visual_vocab_size: int = 1024  # |V_I|, codebook size of the visual tokenizer
    tokens_per_view: int = 196  # L per view: (image_size / 8) ** 2
    # transformer
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 512
    n_enc_layers: int = 3
    n_dec_layers: int = 3
    dropout: float = 0.1
    # CRA (cross-modal representation aligner)
    use_cra: bool = True  # "CRA integration": basis attention + fusion; False = embeddings pass through
    basis: BasisKind = "orthogonal"
    n_basis: int = 2048
    fusion: Fusion = "dual_gate"
    global_loss: bool = True  # triplet loss L_Global on pooled CRA outputs
    margin: float = 0.2  # alpha of Eq. 10
    # TIR (text-to-image refiner)
    use_tir: bool = True
    tir_k: float = 1000.0  # k of k * sigmoid(M)
    mask_loss_reduction: Literal["sum", "mean"] = "sum"  # Eq. 12 as printed is a sum
    # loss weights (lambda_1..3); lambda_3 only acts in stage 2
    lambda_ce: float = 1.0
    lambda_global: float = 1.0
    lambda_mask: float = 1.0

    @property
    def memory_len(self) -> int:
        """L_max: visual sequence length seen by the encoder (all views)."""
        return self.n_views * self.tokens_per_view

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UARConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected with a clear error."""
        return from_known_keys(cls, d)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and two-stage schedule (uar-paper.md §3, open decision 11)."""

    dataset: Dataset = "iu_xray"
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    amsgrad: bool = True
    step_size: int = 10  # StepLR: epochs between decays (10 IU / 3 MIMIC)
    gamma: float = 0.8
    epochs_stage1: int = 100
    epochs_stage2: int = 25
    two_stage: bool = True  # False: single stage with every loss (and the mask) from the start
    seed: int = 7580
    bf16: bool = False  # bf16 autocast (CPU or GPU)
    num_workers: int = 0
    grad_clip: float = 0.1
    # LSU only: share of the visual token ids of each training batch replaced by uniformly random
    # codes (a fresh draw per step), so that no training study is recognised by its exact tokens
    token_noise: float = 0.0
    # share of the words w1..wn the decoder reads as <unk> in each training batch (word dropout; the
    # targets stay the report), so that a training report is not recalled from its own prefix
    word_noise: float = 0.0
    eval_every: int = 1  # epochs between validation runs
    val_beam_size: int = 3
    max_val_studies: int | None = None  # cap validation size for quick runs
    select: Literal["bleu_4", "ce_micro_f1"] = "bleu_4"  # validation metric that picks best.safetensors
    # also write the weights at the end of every epoch (epochs/stage<S>-epoch<NN>.safetensors), for
    # averaging the last epochs (`uar export --average`)
    keep_epochs: bool = False
    log: Literal["csv", "tensorboard"] = "csv"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in checkpoints."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    # Table 2 rows
    "uar": {},
    "base": {
        "visual_encoder": "cnn",
        "use_cra": False,
        "global_loss": False,
        "use_tir": False,
    },
    "base+lsu": {"use_cra": False, "global_loss": False, "use_tir": False},  # (a)
    "base+integration": {"visual_encoder": "cnn", "global_loss": False, "use_tir": False},  # (b)
    "base+global": {"visual_encoder": "cnn", "use_cra": False, "use_tir": False},  # (c)
    "base+cra": {"visual_encoder": "cnn", "use_tir": False},  # (d)
    "lsu+cra": {"use_tir": False},  # (e)
    "no-lsu": {"visual_encoder": "cnn"},
    "no-cra": {"use_cra": False, "global_loss": False},
    "no-tir": {"use_tir": False},
    # Table 3
    "basis-uniform": {"basis": "uniform"},
    "basis-normal": {"basis": "normal"},
    # Table 4
    "fusion-none": {"fusion": "none"},
    "fusion-addition": {"fusion": "addition"},
}


def preset(name: str, base: UARConfig | None = None) -> UARConfig:
    """Return the named ablation preset applied on top of ``base`` (default: UARConfig()).

    "single-stage" (Table 2 row f) is a training setting: ``TrainConfig(two_stage=False)``.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return replace(base or UARConfig(), **PRESETS[name])
