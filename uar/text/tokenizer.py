"""Word-level report tokenizer with R2Gen's vocabulary rule.

The vocabulary is built from the *cleaned training reports only* and keeps words whose count is
``>= threshold`` (R2Gen run scripts: 3 for IU-Xray, 10 for MIMIC-CXR). Ids follow the package
convention: 0 = pad / bos / eos, 1 = ``<unk>``, words from 2 in alphabetical order. (R2Gen sorts
``<unk>`` together with the words and numbers from 1; only the numbering differs.)

Length. ``encode`` keeps at most ``max_len - 1`` words, so that the decoder sequence
``[0, w1 .. wn]`` and its targets ``[w1 .. wn, 0]`` both fit ``T_max = max_len`` positions (R2Gen cuts
``[0] + ids + [0]`` to ``max_len`` and so also keeps at most ``max_len - 1`` words, but loses the end
marker; we keep it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from uar.text.cleaning import clean_report, drop_commas

__all__ = ["PAD_ID", "UNK", "UNK_ID", "TextTokenizer"]

PAD_ID = 0  # also bos and eos
UNK_ID = 1
UNK = "<unk>"
FORMAT = "uar-text-tokenizer/1"


class TextTokenizer:
    """Maps cleaned report words to ids and back.

    Attributes:
        dataset: "iu_xray" or "mimic_cxr"; picks the R2Gen cleaner used by :meth:`clean`.
        threshold: minimum training-split count of a kept word.
        max_len: ``T_max``; :meth:`encode` returns at most ``max_len - 1`` ids.
    """

    def __init__(
        self, words: Sequence[str], *, threshold: int, max_len: int, dataset: str, punctuation: bool = False
    ) -> None:
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {max_len}")
        if UNK in words or len(set(words)) != len(words):
            raise ValueError("words must be unique and must not contain <unk>")
        clean_report("", dataset)  # validates the dataset name
        self.words: list[str] = list(words)
        self.threshold = threshold
        self.max_len = max_len
        self.dataset = dataset
        self.punctuation = punctuation
        self._ids: dict[str, int] = {w: i + 2 for i, w in enumerate(self.words)}

    @classmethod
    def build(
        cls,
        reports: Iterable[str],
        *,
        threshold: int,
        max_len: int,
        dataset: str,
        punctuation: bool = False,
    ) -> TextTokenizer:
        """Build the vocabulary from already cleaned training reports (count >= ``threshold``);
        with ``punctuation`` they are cleaned with commas kept (:meth:`clean_for`)."""
        counts = Counter(word for report in reports for word in report.split())
        words = sorted(w for w, n in counts.items() if n >= threshold and w != UNK)
        return cls(words, threshold=threshold, max_len=max_len, dataset=dataset, punctuation=punctuation)

    @staticmethod
    def clean_for(dataset: str, text: str, punctuation: bool = False) -> str:
        """R2Gen cleaning of ``text`` for ``dataset`` ("iu_xray" or "mimic_cxr"), commas kept as
        tokens when ``punctuation``."""
        return clean_report(text, dataset, commas=punctuation)

    @property
    def vocab_size(self) -> int:
        """Number of ids, including 0 (pad/bos/eos) and 1 (``<unk>``)."""
        return len(self.words) + 2

    def clean(self, text: str) -> str:
        """R2Gen cleaning of a raw report for this tokenizer's dataset (the form metrics score)."""
        return clean_report(text, self.dataset)

    def scored(self, decoded: str) -> str:
        """The form of :meth:`decode` output that metrics score: R2Gen's, without comma tokens."""
        return drop_commas(decoded) if self.punctuation else decoded

    def encode(self, report: str) -> list[int]:
        """Clean ``report`` (commas kept as tokens when ``punctuation``) and map its words to ids
        (unknown words -> 1), at most ``max_len - 1`` ids, without bos/eos."""
        words = clean_report(report, self.dataset, commas=self.punctuation).split()[: self.max_len - 1]
        return [self._ids.get(w, UNK_ID) for w in words]

    def word_id(self, word: str) -> int:
        """The id of ``word`` (1 = ``<unk>`` when it is not in the vocabulary)."""
        return self._ids.get(word, UNK_ID)

    def id_to_word(self, i: int) -> str:
        """The word of id ``i`` (>= 1); 1 is ``<unk>``."""
        if i == UNK_ID:
            return UNK
        if not 2 <= i < self.vocab_size:
            raise ValueError(f"token id {i} outside the vocabulary (size {self.vocab_size})")
        return self.words[i - 2]

    def decode(self, ids: Sequence[int]) -> str:
        """Words of ``ids`` joined by spaces, stopping at the first 0 (eos/pad)."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == PAD_ID:
                break
            out.append(self.id_to_word(i))
        return " ".join(out)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in checkpoints."""
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "threshold": self.threshold,
            "max_len": self.max_len,
            "words": list(self.words),
            "punctuation": self.punctuation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextTokenizer:
        """Inverse of :meth:`to_dict`."""
        if d.get("format") != FORMAT:
            raise ValueError(f"not a text tokenizer dict (format {d.get('format')!r}, expected {FORMAT!r})")
        return cls(
            d["words"],
            threshold=int(d["threshold"]),
            max_len=int(d["max_len"]),
            dataset=d["dataset"],
            punctuation=bool(d.get("punctuation", False)),
        )

    def __repr__(self) -> str:
        return (
            f"TextTokenizer(dataset={self.dataset!r}, vocab_size={self.vocab_size}, max_len={self.max_len})"
        )
