"""One-call report generation from images: :class:`ReportGenerator` and its :class:`Report`.

The model writes the *findings* (R2Gen-cleaned, lower-case, sentences joined by " . "); they are
turned into readable sentences here. The *impression* is derived, not generated: the rule-based
labeler (:func:`uar.eval.labeler.label_report`) labels the findings and
:func:`uar.report.impression_from_labels` summarises the labels.

Inputs are the package's image convention: ``np.ndarray`` float32 (H, W) in [0, 1], display
polarity (see :func:`uar.data.images.load_image`). A two-view model given no lateral image uses the
frontal image in both slots; a one-view model ignores the lateral image.

Every report carries the study's input-domain verdict (:mod:`uar.ood`): ``in_domain`` or
``out_of_domain`` with its score and threshold when the checkpoint holds calibration data,
``unchecked`` when it does not. With ``withhold_out_of_domain=True`` no findings are generated for
out-of-domain studies: their report is :func:`withheld_report` (no findings, no labels).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from uar.checkpoint import Checkpoint, load_checkpoint
from uar.config import UARConfig
from uar.data.images import to_tensor
from uar.decoding import beam_search, greedy
from uar.eval.labeler import OBSERVATIONS, label_report, label_sentence
from uar.grounding import DEFAULT_RULE, DEFAULT_SMOOTHING, Head, Rule, SentenceMap, combine, sentence_spans
from uar.modules.attention import int8_decoding
from uar.ood import CODE_MEAN, DomainVerdict, code_features, feature_for, pool_views, view_features
from uar.report import impression_from_labels
from uar.text.cleaning import COMMA
from uar.text.tokenizer import UNK
from uar.text.wording import repair_wording

DEFAULT_CHECKPOINT_NAME = "uar-default.safetensors"
ANONYMISED = "xxxx"  # IU-Xray's de-identification token, kept as is


def default_checkpoint_path() -> Path:
    """Where the embedded default model lives: ``uar/default_model/uar-default.safetensors``."""
    return Path(__file__).resolve().parent / "default_model" / DEFAULT_CHECKPOINT_NAME


@dataclass
class Report:
    """A generated draft report."""

    findings: str  # readable sentences, e.g. "The heart is normal in size. The lungs are clear."
    impression: str  # derived from the findings' labels (rule-based), not generated
    labels: dict[str, int | None]  # 14 CheXpert observations: 1 / 0 / -1 (uncertain) / None
    model_name: str
    model_version: str
    token_ids: list[int]  # generated word ids, without bos/eos
    domain: DomainVerdict = field(default_factory=DomainVerdict.unchecked)  # input-domain check
    withheld: bool = False  # True: out of domain, nothing generated (findings hold the statement)
    maps: list[SentenceMap] = field(default_factory=list)  # grounding maps, when asked for


def withheld_report(verdict: DomainVerdict, model_name: str, model_version: str) -> Report:
    """The report of an out-of-domain study whose findings are withheld: the findings and the
    impression state why, every label is "not mentioned", no word was generated."""

    return Report(
        findings=f"No findings are reported. {verdict.statement()} The model's findings are withheld;"
        " the images need a radiologist's reading without an AI draft.",
        impression="No impression: the findings were withheld (image outside the model's validated"
        " input domain).",
        labels=dict.fromkeys(OBSERVATIONS),
        model_name=model_name,
        model_version=model_version,
        token_ids=[],
        domain=verdict,
        withheld=True,
    )


# report words that radiologists write in capitals (IU-Xray's reports are lower-cased)
ABBREVIATIONS: dict[str, str] = {"svc": "SVC", "ij": "IJ", "lv": "LV", "pa": "PA", "picc": "PICC", "ng": "NG"}


def readable_findings(text: str) -> str:
    """Decoded text ("the heart is normal , no effusion . lungs are clear .") -> prose: "The heart
    is normal, no effusion. Lungs are clear."

    Sentences are capitalised unless they start with "xxxx" and end in a full stop; commas are
    attached to the word before them (a comma that opens or closes a sentence, or follows another,
    is dropped); ``<unk>`` words and a word repeated right after itself are dropped; a one-word
    sentence that names no finding ("Right.", unlike "Cardiomegaly.") is an orphan fragment and is
    left out. Abbreviations are written in capitals (:data:`ABBREVIATIONS`: "lower SVC"), and the
    corpus's known wording slips are repaired (:func:`uar.text.wording.repair_wording`: "normal heart
    size mediastinal contours" -> "Normal heart size and mediastinal contours.").
    """
    sentences: list[str] = []
    for part in re.split(r"\s*\.\s*", text):
        words: list[str] = []
        for w in part.split():
            w = ABBREVIATIONS.get(w, w)
            if w == UNK or (words and w == words[-1]) or (w == COMMA and not words):
                continue
            words.append(w)
        while words and words[-1] == COMMA:
            words.pop()
        if not words:
            continue
        sentence = repair_wording(" ".join(words).replace(f" {COMMA}", COMMA)) + "."
        if words[0] != ANONYMISED:
            sentence = sentence[:1].upper() + sentence[1:]
        if len(words) > 1 or _names_finding(sentence):
            sentences.append(sentence)
    return " ".join(sentences)


def _names_finding(sentence: str) -> bool:
    """Whether the labeler reads an observation (other than "No Finding") in ``sentence``."""
    return any(v is not None for k, v in label_sentence(sentence).items() if k != "No Finding")


class ReportGenerator:
    """A loaded checkpoint ready to write reports; load once per process with :meth:`load`."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        self.visual_tokenizer = checkpoint.visual_tokenizer
        if self.visual_tokenizer is not None:
            self.visual_tokenizer.eval()
        self.text_tokenizer = checkpoint.text_tokenizer
        self.input_check = checkpoint.input_check

    @classmethod
    def load(cls, path: str | Path | None = None) -> ReportGenerator:
        """Load a checkpoint file; ``None`` loads the embedded default model.

        Raises ``FileNotFoundError`` (naming ``make train-default`` for the default model) when the
        file is absent, ``ValueError`` when it is not a valid UAR checkpoint.
        """
        if path is None:
            path = default_checkpoint_path()
            if not path.is_file():
                raise FileNotFoundError(
                    f"the embedded default model {path} is missing; build it with `make train-default`"
                    " or pass a checkpoint path"
                )
        return cls(load_checkpoint(path))

    @property
    def name(self) -> str:
        """Model name from the checkpoint metadata."""
        return str(self.checkpoint.meta["model_name"])

    @property
    def version(self) -> str:
        """Model version from the checkpoint metadata."""
        return str(self.checkpoint.meta["model_version"])

    @property
    def grounding_heads(self) -> list[Head]:
        """The (layer, head) pairs the checkpoint's grounding maps average (empty: all heads)."""
        g = self.checkpoint.grounding
        return [(int(a), int(b)) for a, b in g["heads"]] if g else []

    @property
    def grounding_smoothing(self) -> float:
        """Gaussian standard deviation of the grounding maps' cells, a fraction of the view's side
        (chosen with the heads; :data:`uar.grounding.DEFAULT_SMOOTHING` when the checkpoint has none)."""
        g = self.checkpoint.grounding
        return float(g.get("smoothing", DEFAULT_SMOOTHING)) if g else DEFAULT_SMOOTHING

    @property
    def config(self) -> UARConfig:
        """The model's architecture."""
        return self.checkpoint.cfg

    def _views(self, frontal: np.ndarray, lateral: np.ndarray | None) -> torch.Tensor:
        """One study -> (V, 1, S, S) float32 in [0, 1]."""
        size = self.config.image_size
        images = [frontal]
        if self.config.n_views == 2:
            images.append(lateral if lateral is not None else frontal)
        return torch.stack([to_tensor(np.asarray(img, dtype=np.float32), size) for img in images])

    @torch.inference_mode()
    def visual_input(self, studies: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> torch.Tensor:
        """Studies -> model input: token ids (B, V, L) for LSU models, images (B, V, 1, S, S) for Base."""
        images = torch.stack([self._views(f, lat) for f, lat in studies])  # (B, V, 1, S, S)
        if self.visual_tokenizer is None:
            return images
        b, v = images.shape[:2]
        ids = self.visual_tokenizer.encode(images.flatten(0, 1))  # (B*V, L)
        return ids.view(b, v, -1)

    @property
    def check_feature(self) -> str:
        """The input-domain feature a new calibration of this model fits (:func:`uar.ood.feature_for`)."""
        return feature_for(self.config.visual_encoder)

    def view_features(
        self, studies: Sequence[tuple[np.ndarray, np.ndarray | None]], feature: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input-domain features (B, V, c) of studies and which views they supplied (B, V) bool;
        ``feature`` (one of :data:`uar.ood.FEATURES`) defaults to :attr:`check_feature`."""
        return self.input_features(self.visual_input(studies), feature), self._supplied(studies)

    @torch.inference_mode()
    def input_features(
        self, visual: torch.Tensor, feature: str | None = None, embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Input-domain features (B, V, c) of model input ``visual`` (:meth:`visual_input`);
        ``embedding``: its E^(I) (B, L, d) when the caller has it."""
        feature = feature or self.check_feature
        if feature == CODE_MEAN:
            if self.visual_tokenizer is None:
                raise ValueError("the code-vector feature needs a model that reads visual tokens")
            return code_features(self.visual_tokenizer.code_vectors(), visual)
        if embedding is None:
            return view_features(self.model, visual)
        return pool_views(embedding, self.config.n_views)

    def _supplied(self, studies: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> torch.Tensor:
        supplied = torch.ones(len(studies), self.config.n_views, dtype=torch.bool)
        if self.config.n_views == 2:
            supplied[:, 1] = torch.tensor([lat is not None for _, lat in studies])
        return supplied

    def _verdicts(
        self,
        visual: torch.Tensor,
        embedding: torch.Tensor | None,
        studies: Sequence[tuple[np.ndarray, np.ndarray | None]],
    ) -> list[DomainVerdict]:
        """Verdicts of ``studies`` from their model input ``visual`` and, when the caller has it,
        its E^(I) ``embedding`` (None: computed only if the check's feature needs it)."""
        if self.input_check is None:
            return [DomainVerdict.unchecked() for _ in studies]
        features = self.input_features(visual, self.input_check.feature, embedding)
        return self.input_check.verdicts(self.input_check.scores(features, self._supplied(studies)))

    def check_domain(self, studies: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> list[DomainVerdict]:
        """The input-domain verdict of each study (``unchecked`` for a model without calibration)."""
        if not studies:
            return []
        if self.input_check is None:
            return [DomainVerdict.unchecked() for _ in studies]
        return self._verdicts(self.visual_input(studies), None, studies)

    def generate(
        self,
        frontal: np.ndarray,
        lateral: np.ndarray | None = None,
        *,
        beam_size: int = 3,
        int8: bool = False,
        withhold_out_of_domain: bool = False,
        maps: bool = False,
        rule: Rule | None = None,
    ) -> Report:
        """Write the report of one study (frontal and optional lateral image); see :meth:`generate_batch`."""
        return self.generate_batch(
            [(frontal, lateral)],
            beam_size=beam_size,
            int8=int8,
            withhold_out_of_domain=withhold_out_of_domain,
            maps=maps,
            rule=rule,
        )[0]

    def generate_batch(
        self,
        studies: Sequence[tuple[np.ndarray, np.ndarray | None]],
        *,
        beam_size: int = 3,
        int8: bool = False,
        withhold_out_of_domain: bool = False,
        maps: bool = False,
        rule: Rule | None = None,
    ) -> list[Report]:
        """Write the reports of several studies in one batched search; ``beam_size=1`` is greedy.

        ``maps=True`` also reads back where the decoder looked for each sentence (one teacher-forced
        pass per report, :mod:`uar.grounding`, combined by ``rule``; None = the checkpoint's
        grounding heads, or :data:`uar.grounding.DEFAULT_RULE` when it has none) into
        :attr:`Report.maps`; a withheld report has none.

        Each report carries its study's input-domain verdict; ``withhold_out_of_domain=True`` skips
        the decoding of out-of-domain studies and returns :func:`withheld_report` for them.

        ``int8=True`` decodes with int8 copies of the weight matrices
        (:func:`uar.modules.attention.int8_decoding`): faster on CPU for one study at a time (docs/
        benchmarks.md), the same findings for most studies but not always the same wording, and
        batches of more than a few beams still run in fp32.
        """
        if not studies:
            return []
        visual = self.visual_input(studies)
        with torch.inference_mode():
            embedding = self.model.embed_visual(visual)  # (B, L_max, d), read by the check and decoder
        verdicts = self._verdicts(visual, embedding, studies)
        keep = [i for i, v in enumerate(verdicts) if not (withhold_out_of_domain and v.out_of_domain)]
        ids: list[list[int]] = []
        if keep:
            rows, rows_e = visual, embedding
            if len(keep) < len(studies):
                rows, rows_e = visual[keep], embedding[keep]
            with int8_decoding(int8), self.model.reuse_visual_embedding(rows, rows_e):
                if beam_size == 1:
                    ids = greedy(self.model, rows)
                else:
                    ids = beam_search(self.model, rows, beam_size=beam_size)
        generated = dict(zip(keep, ids, strict=True))
        reports = []
        for i, verdict in enumerate(verdicts):
            if i not in generated:
                reports.append(withheld_report(verdict, self.name, self.version))
                continue
            findings = readable_findings(self.text_tokenizer.decode(generated[i]))
            labels = label_report(findings)
            reports.append(
                Report(
                    findings=findings,
                    impression=impression_from_labels(labels),
                    labels=labels,
                    model_name=self.name,
                    model_version=self.version,
                    token_ids=list(generated[i]),
                    domain=verdict,
                    maps=self.sentence_maps(visual[i : i + 1], generated[i], rule, embedding[i : i + 1])
                    if maps
                    else [],
                )
            )
        return reports

    @torch.inference_mode()
    def sentence_maps(
        self,
        visual: torch.Tensor,
        token_ids: Sequence[int],
        rule: Rule | None = None,
        embedding: torch.Tensor | None = None,
    ) -> list[SentenceMap]:
        """Grounding maps of one generated report: ``visual`` is its model input (1, ...) from
        :meth:`visual_input`, ``token_ids`` its words. One :class:`SentenceMap` per sentence of the
        readable findings (sentences the prose rules drop, such as orphan fragments, have none).
        ``embedding``: E^(I) of ``visual`` (1, L, d) when the caller has it (the encoder is not run again).
        """
        ids = [int(t) for t in token_ids]
        if not ids:
            return []
        words = torch.tensor([[0, *ids]], dtype=torch.long)  # bos + words
        if embedding is None:
            embedding = self.model.embed_visual(visual)
        with self.model.reuse_visual_embedding(visual, embedding):
            attention = self.model.cross_attention(visual, words)[0]  # (layers, H, T+1, L)
        spans = sentence_spans(ids, self.text_tokenizer.word_id("."))
        if rule is None:
            rule = "heads" if self.grounding_heads else DEFAULT_RULE
        grids = combine(attention, spans, self.config.n_views, rule, self.grounding_heads)
        out = []
        for (s, e), grid in zip(spans, grids, strict=True):
            sentence = readable_findings(self.text_tokenizer.decode(ids[s:e]))
            if sentence:
                out.append(SentenceMap(sentence, (s, e), grid, self.grounding_smoothing))
        return out
