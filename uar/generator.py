"""One-call report generation from images: :class:`ReportGenerator` and its :class:`Report`.

The model writes the *findings* (R2Gen-cleaned, lower-case, sentences joined by " . "); they are
turned into readable sentences here. The *impression* is derived, not generated: the rule-based
labeler (:func:`uar.eval.labeler.label_report`) labels the findings and
:func:`uar.report.impression_from_labels` summarises the labels.

Inputs are the package's image convention: ``np.ndarray`` float32 (H, W) in [0, 1], display
polarity (see :func:`uar.data.images.load_image`). A two-view model given no lateral image uses the
frontal image in both slots; a one-view model ignores the lateral image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uar.checkpoint import Checkpoint, load_checkpoint
from uar.config import UARConfig
from uar.data.images import to_tensor
from uar.decoding import beam_search, greedy
from uar.eval.labeler import label_report
from uar.modules.attention import int8_decoding
from uar.report import impression_from_labels
from uar.text.tokenizer import UNK

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


def readable_findings(text: str) -> str:
    """R2Gen-cleaned text ("the heart is normal . lungs are clear .") -> "The heart is normal. Lungs
    are clear." Sentences are capitalised unless they start with "xxxx"; ``<unk>`` words are dropped."""
    sentences: list[str] = []
    for part in re.split(r"\s*\.\s*", text):
        words = [w for w in part.split() if w != UNK]
        if not words:
            continue
        if words[0] != ANONYMISED:
            words[0] = words[0][:1].upper() + words[0][1:]
        sentences.append(" ".join(words) + ".")
    return " ".join(sentences)


class ReportGenerator:
    """A loaded checkpoint ready to write reports; load once per process with :meth:`load`."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        self.visual_tokenizer = checkpoint.visual_tokenizer
        if self.visual_tokenizer is not None:
            self.visual_tokenizer.eval()
        self.text_tokenizer = checkpoint.text_tokenizer

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

    def generate(
        self,
        frontal: np.ndarray,
        lateral: np.ndarray | None = None,
        *,
        beam_size: int = 3,
        int8: bool = False,
    ) -> Report:
        """Write the report of one study (frontal and optional lateral image); see :meth:`generate_batch`."""
        return self.generate_batch([(frontal, lateral)], beam_size=beam_size, int8=int8)[0]

    def generate_batch(
        self,
        studies: Sequence[tuple[np.ndarray, np.ndarray | None]],
        *,
        beam_size: int = 3,
        int8: bool = False,
    ) -> list[Report]:
        """Write the reports of several studies in one batched search; ``beam_size=1`` is greedy.

        ``int8=True`` decodes with int8 copies of the weight matrices
        (:func:`uar.modules.attention.int8_decoding`): faster on CPU for one study at a time (docs/
        benchmarks.md), the same findings for most studies but not always the same wording, and
        batches of more than a few beams still run in fp32.
        """
        if not studies:
            return []
        visual = self.visual_input(studies)
        with int8_decoding(int8):
            if beam_size == 1:
                ids = greedy(self.model, visual)
            else:
                ids = beam_search(self.model, visual, beam_size=beam_size)
        reports = []
        for token_ids in ids:
            findings = readable_findings(self.text_tokenizer.decode(token_ids))
            labels = label_report(findings)
            reports.append(
                Report(
                    findings=findings,
                    impression=impression_from_labels(labels),
                    labels=labels,
                    model_name=self.name,
                    model_version=self.version,
                    token_ids=list(token_ids),
                )
            )
        return reports
