"""UAR: LSU (or the Base CNN) -> CRA -> 3-layer Transformer with TIR -> vocabulary head.

uar-paper.md §2 and §3: ``forward`` returns the training losses of one batch (L_CE, L_Global, L_Mask
and their weighted sum); ``encode`` / ``init_decoding`` / ``decode_step`` are the inference API used by
:mod:`uar.decoding`. Every ablation of Tables 2-4 is a switch of :class:`uar.config.UARConfig`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uar.config import UARConfig
from uar.modules.attention import Linear, int8_decoding_enabled
from uar.modules.cnn import CNNEncoder
from uar.modules.cra import CRA, masked_mean, triplet_loss
from uar.modules.lsu import LSU, WordEmbedding
from uar.modules.memo import TokenMemo, weights_signature
from uar.modules.tir import TIRMask
from uar.modules.transformer import Decoder, Encoder, KVCache


@dataclass
class Memory:
    """Result of :meth:`UAR.encode`."""

    enc: Tensor  # (B, L, d) encoder output, attended to by the decoder
    img_vec: Tensor  # (B, d) L2-normalised mean of the aligned visual features F^(I)


@dataclass
class DecodeState:
    """Everything :meth:`UAR.decode_step` reuses across steps of one generation call."""

    rows: int  # R = batch x beams
    memory: Tensor  # encoder output: (B, L, d) per study when cached, (R, L, d) per row when not
    mem_kv: list[tuple[Tensor, Tensor]] | None  # per decoder layer (B, H, L, d_k) x2, cached path
    cache: KVCache | None  # self-attention keys/values of past steps, cached path
    basis_kv: tuple[Tensor, Tensor] | None  # projected CRA basis (1, H, n, d_k) x2
    tir_bias: Tensor | None  # (max_len, L) k * sigmoid(M), None when the mask is off

    def reorder(self, rows: Tensor) -> None:
        """Beam search: row i continues from old row ``rows[i]`` (always within the same study)."""
        if self.cache is not None:
            self.cache.reorder(rows)


_REUSED = threading.local()  # (model id, visual tensor, its embedding) of reuse_visual_embedding


class UAR(nn.Module):
    """The UAR report generator and its Base / ablation variants, built from a :class:`UARConfig`.

    ``visual`` is token ids ``LongTensor (B, V, L)`` when ``cfg.visual_encoder == "lsu"`` and images
    ``Tensor (B, V, 1, S, S)`` in [0, 1] when ``"cnn"``. Reports are ``LongTensor (B, T+1)`` laid out
    ``[0, w1..wn, 0, pad(0)...]`` (id 0 = bos/eos/pad). The TIR mask acts in attention iff
    ``cfg.use_tir`` and the stage is 2 (``forward``'s argument in training, :attr:`stage` at inference;
    :attr:`stage` is stored in the state dict so checkpoints keep it).
    """

    def __init__(self, cfg: UARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if cfg.visual_encoder == "lsu":
            self.lsu = LSU(
                cfg.visual_vocab_size, cfg.vocab_size, d, cfg.n_views, cfg.tokens_per_view, cfg.max_len + 2
            )
            tokens_per_view = cfg.tokens_per_view
        elif cfg.visual_encoder == "cnn":
            self.cnn = CNNEncoder(d, cfg.n_views, cfg.image_size)
            self.word_embed = WordEmbedding(cfg.vocab_size, d, cfg.max_len + 2)
            tokens_per_view = self.cnn.tokens_per_view
        else:
            raise ValueError(f"unknown visual_encoder {cfg.visual_encoder!r}; expected lsu or cnn")
        self.memory_len = cfg.n_views * tokens_per_view  # L_max
        self.cra = (
            CRA(d, cfg.n_heads, cfg.n_basis, cfg.basis, cfg.fusion, cfg.dropout) if cfg.use_cra else None
        )
        self.encoder = Encoder(cfg.n_enc_layers, d, cfg.n_heads, cfg.d_ff, cfg.dropout)
        self.decoder = Decoder(cfg.n_dec_layers, d, cfg.n_heads, cfg.d_ff, cfg.dropout)
        self.head = Linear(d, cfg.vocab_size)
        # T_max = max_len + 1 decoder inputs (bos + up to max_len words) x L_max visual tokens
        self.tir = TIRMask(cfg.max_len + 1, self.memory_len, cfg.tir_k) if cfg.use_tir else None
        self.register_buffer("stage_id", torch.tensor(1))
        self.word_memo = TokenMemo()  # aligned embeddings of decoded words, see decode_step
        for name, module in self.named_modules():
            # R2GenCMN: Xavier-uniform matrices; attention in_proj blocks are initialised per block
            if isinstance(module, nn.Linear) and not name.endswith("in_proj"):
                nn.init.xavier_uniform_(module.weight)

    @property
    def stage(self) -> int:
        """Training stage the model is in (1 or 2); decides whether TIR acts at inference."""
        return int(self.stage_id.item())

    @stage.setter
    def stage(self, value: int) -> None:
        if value not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {value}")
        self.stage_id.fill_(value)

    # ----------------------------------------------------------------- embeddings and alignment
    @contextmanager
    def reuse_visual_embedding(self, visual: Tensor, embedding: Tensor) -> Iterator[None]:
        """Within the block (this thread), :meth:`embed_visual` of this very ``visual`` tensor returns
        ``embedding`` (B, L_max, d), computed once by the caller, instead of running the encoder again
        (the input-domain check of :mod:`uar.ood` and the decoder read the same E^(I))."""
        previous = getattr(_REUSED, "entry", None)
        _REUSED.entry = (id(self), visual, embedding)
        try:
            yield
        finally:
            _REUSED.entry = previous

    def embed_visual(self, visual: Tensor) -> Tensor:
        """E^(I): token ids (B, V, L) or images (B, V, 1, S, S) -> (B, L_max, d)."""
        reused = getattr(_REUSED, "entry", None)
        if reused is not None and reused[0] == id(self) and reused[1] is visual:
            return reused[2]
        v = self.cfg.n_views
        if self.cfg.visual_encoder == "lsu":
            if visual.dtype != torch.long or visual.dim() != 3 or visual.shape[1] != v:
                raise ValueError(f"LSU model expects token ids (B, {v}, L), got {_describe(visual)}")
            return self.lsu.embed_visual(visual)
        if visual.dim() != 5 or visual.shape[1] != v or visual.shape[2] != 1:
            raise ValueError(f"CNN model expects images (B, {v}, 1, S, S), got {_describe(visual)}")
        return self.cnn(visual)

    def embed_words(self, ids: Tensor, start: int = 0) -> Tensor:
        """E^(R): word ids (B, T) at positions ``start..`` -> (B, T, d)."""
        if self.cfg.visual_encoder == "lsu":
            return self.lsu.embed_words(ids, start)
        return self.word_embed(ids, start)

    def align(self, e: Tensor, basis_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """F = CRA(E) (B, N, d); the identity when ``use_cra`` is off."""
        return self.cra(e, basis_kv) if self.cra is not None else e

    def basis_kv(self) -> tuple[Tensor, Tensor] | None:
        """Projected CRA basis for reuse within one call, or None without CRA."""
        return self.cra.basis_kv() if self.cra is not None else None

    def tir_active(self, stage: int) -> bool:
        """Whether the TIR mask is added to cross-attention at ``stage``."""
        return self.tir is not None and stage == 2

    # ----------------------------------------------------------------- training
    def forward(
        self, visual: Tensor, reports: Tensor, stage: int, inputs: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Teacher-forced losses of one batch; keys ``loss``, ``ce``, ``global``, ``mask`` (0-dim).

        L = lambda_ce * L_CE + lambda_global * L_Global + [stage 2] lambda_mask * L_Mask. L_CE is the
        mean over target tokens w1..wn and the final eos; L_Global is computed on mean-pooled F^(I)
        and on F^(R) mean-pooled over w1..wn. ``inputs`` (B, T+1), when given, is what the decoder
        reads instead of ``reports`` (a word-noised copy); targets and L_Global keep ``reports``.
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        cfg = self.cfg
        if reports.dim() != 2 or reports.shape[1] < 2:
            raise ValueError(f"reports must be LongTensor (B, T+1) with T >= 1, got {_describe(reports)}")
        kv = self.basis_kv()
        f_img = self.align(self.embed_visual(visual), kv)  # (B, L, d)
        f_rep = self.align(self.embed_words(reports), kv)  # (B, T+1, d)
        memory = self.encoder(f_img)  # (B, L, d)
        t = reports.shape[1] - 1
        bias = self.tir.bias(t, memory.shape[1]) if self.tir_active(stage) else None  # (T, L)
        if inputs is not None and inputs.shape != reports.shape:
            raise ValueError(f"decoder inputs {_describe(inputs)} do not match reports {_describe(reports)}")
        f_in = f_rep if inputs is None else self.align(self.embed_words(inputs), kv)  # (B, T+1, d)
        h = self.decoder(f_in[:, :-1], memory, bias)  # (B, T, d)
        logits = self.head(h)  # (B, T, V)
        targets = reports[:, 1:]  # (B, T)
        n_words = (targets != 0).sum(dim=1, keepdim=True)  # (B, 1)
        positions = torch.arange(t, device=reports.device).unsqueeze(0)  # (1, T)
        target_mask = positions <= n_words  # w1..wn and the eos
        ce = F.cross_entropy(logits[target_mask], targets[target_mask])
        zero = ce.new_zeros(())
        glob = zero
        if cfg.global_loss:
            rep_vec = masked_mean(f_rep, word_mask(reports))
            glob = triplet_loss(f_img.mean(dim=1), rep_vec, cfg.margin)
        mask = self.tir.loss(cfg.mask_loss_reduction) if self.tir_active(stage) else zero
        loss = cfg.lambda_ce * ce + cfg.lambda_global * glob + cfg.lambda_mask * mask
        return {"loss": loss, "ce": ce, "global": glob, "mask": mask}

    def align_features(self, visual: Tensor, reports: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised pooled F^(I) and F^(R), each (B, d), for image-report retrieval."""
        kv = self.basis_kv()
        img = self.align(self.embed_visual(visual), kv).mean(dim=1)
        rep = masked_mean(self.align(self.embed_words(reports), kv), word_mask(reports))
        return F.normalize(img, dim=-1), F.normalize(rep, dim=-1)

    # ----------------------------------------------------------------- inference
    def encode(self, visual: Tensor, basis_kv: tuple[Tensor, Tensor] | None = None) -> Memory:
        """Visual input -> encoder output (B, L, d) and the pooled aligned image vector (B, d)."""
        f_img = self.align(self.embed_visual(visual), basis_kv or self.basis_kv())
        return Memory(enc=self.encoder(f_img), img_vec=F.normalize(f_img.mean(dim=1), dim=-1))

    @torch.no_grad()
    def cross_attention(self, visual: Tensor, words: Tensor) -> Tensor:
        """Where the decoder looks while reading ``words`` (B, T) = [bos, w1..w(T-1)] after ``visual``.

        One teacher-forced pass; row ``t`` is the query that produced word ``t + 1``. Returns the
        cross-attention probabilities (B, layers, H, T, L), the TIR bias included when it acts.
        """
        if words.shape[1] > self.cfg.max_len + 1:
            raise ValueError(
                f"{words.shape[1]} decoder inputs exceed the model's maximum {self.cfg.max_len + 1}"
            )
        kv = self.basis_kv()
        memory = self.encode(visual, kv).enc  # (B, L, d)
        t = words.shape[1]
        bias = self.tir.bias(t, memory.shape[1]) if self.tir_active(self.stage) else None  # (T, L)
        record: list[Tensor] = []
        self.decoder(self.align(self.embed_words(words), kv), memory, bias, record=record)
        return torch.stack(record, dim=1)

    def init_decoding(self, visual: Tensor, beams: int, max_len: int, *, use_cache: bool) -> DecodeState:
        """Encode ``visual`` once and prepare decoding of ``beams`` rows per study for ``max_len`` steps.

        Rows are ordered study-major: row ``b * beams + j`` is beam ``j`` of study ``b``.
        """
        if max_len > self.cfg.max_len + 1:
            raise ValueError(f"max_len={max_len} exceeds the model's maximum {self.cfg.max_len}")
        basis_kv = self.basis_kv()
        enc = self.encode(visual, basis_kv).enc  # (B, L, d)
        rows = enc.shape[0] * beams
        tir_bias = self.tir.bias(max_len, enc.shape[1]) if self.tir_active(self.stage) else None
        if use_cache:
            self.word_memo.validate(self._word_memo_signature())
            mem_kv = self.decoder.memory_kv(enc)  # projected once per study, shared by its beams
            cache = self.decoder.new_cache(rows, max_len, enc)
            return DecodeState(rows, enc, mem_kv, cache, basis_kv, tir_bias)
        memory = enc.repeat_interleave(beams, dim=0)  # (R, L, d)
        return DecodeState(rows, memory, None, None, basis_kv, tir_bias)

    def decode_step(self, state: DecodeState, prefix: Tensor) -> Tensor:
        """Log-probabilities (R, V) of the next word after ``prefix`` (R, t+1) = [0, w1..wt].

        With a cache only the last token is embedded (and aligned, through :meth:`step_words`) and run
        through the decoder; without one the whole prefix is recomputed.
        """
        t = prefix.shape[1] - 1
        if state.cache is not None:
            if state.cache.length != t:
                raise ValueError(f"KV cache holds {state.cache.length} steps, the prefix {t + 1} tokens")
            x = self.step_words(prefix[:, -1], t, state.basis_kv)  # (R, 1, d)
            bias = state.tir_bias[t : t + 1] if state.tir_bias is not None else None  # (1, L)
            h = self.decoder.step(x, state.cache, state.mem_kv, bias)  # (R, 1, d)
        else:
            x = self.align(self.embed_words(prefix), state.basis_kv)  # (R, t+1, d)
            bias = state.tir_bias[: t + 1] if state.tir_bias is not None else None  # (t+1, L)
            h = self.decoder(x, state.memory, bias)[:, -1:]  # (R, 1, d)
        return F.log_softmax(self.head(h[:, 0]), dim=-1)

    def step_words(self, words: Tensor, position: int, basis_kv: tuple[Tensor, Tensor] | None) -> Tensor:
        """F^(R) of one decoded word per row: words (R,) at ``position`` -> (R, 1, d).

        With CRA the rows come from :attr:`word_memo` (computed on first use; kept across calls while
        the weights stay the same, see :mod:`uar.modules.memo`): the same numbers as aligning them here.
        """
        if self.cra is None:
            return self.embed_words(words.unsqueeze(1), start=position)

        def compute(ids: list[int]) -> Tensor:
            e = self.embed_words(torch.tensor(ids, device=words.device).unsqueeze(1), start=position)
            return self.align(e, basis_kv)[:, 0]  # (m, d)

        mode = (int8_decoding_enabled(), torch.is_autocast_enabled(words.device.type))
        return self.word_memo.rows(mode, position, words.tolist(), compute).unsqueeze(1)

    def _word_memo_signature(self) -> tuple[tuple[int, int], ...]:
        """Storage and version of every tensor the aligned word embeddings depend on."""
        embed = self.lsu.word_embed if self.cfg.visual_encoder == "lsu" else self.word_embed
        tensors = [*embed.parameters(), *embed.buffers()]
        if self.cra is not None:
            tensors += [*self.cra.parameters(), *self.cra.buffers()]
        return weights_signature(tensors)


def word_mask(reports: Tensor) -> Tensor:
    """(B, T+1) bool, True at the word positions 1..n of reports laid out [0, w1..wn, 0, pad...]."""
    n_words = (reports[:, 1:] != 0).sum(dim=1, keepdim=True)  # (B, 1)
    positions = torch.arange(reports.shape[1], device=reports.device).unsqueeze(0)  # (1, T+1)
    return (positions >= 1) & (positions <= n_words)


def _describe(x: Tensor) -> str:
    return f"{x.dtype} {tuple(x.shape)}"
