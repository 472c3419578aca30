"""R2Gen report cleaning, reproduced from the behaviour of R2Gen's ``modules/tokenizers.py``.

Both cleaners lower-case the report, strip enumeration markers, split it into sentences on ". ",
delete punctuation inside each sentence and rejoin the sentences as ``"s1 . s2 . ... ."`` so that
the full stop is a token of its own. Tokens are then obtained with ``str.split()``.

R2Gen's quirks are kept on purpose, so that vocabularies and BLEU scores stay comparable with the
R2Gen family (peers-and-metrics.md §1.4):

- the punctuation class ``[.,?;*!%^&_+():-\\[\\]{}]`` contains the range ``:-\\[`` (0x3A-0x5B), which
  also deletes ``< = > @`` (and upper-case letters, already lower-cased); the hyphen is the range
  operator, not a member, so hyphens are kept;
- the guard meant to drop empty sentences never fires (R2Gen compares a string with a list), so an
  empty sentence survives as a stray ``" . "``;
- enumeration stripping is a plain substring replace: "1. " is removed anywhere, so "21. " loses
  its "1. " as well;
- digits are kept, and IU-Xray's "xxxx" anonymisation is kept as a word.
"""

from __future__ import annotations

import re

__all__ = ["clean_report", "clean_report_iu", "clean_report_mimic"]

# R2Gen's character class, verbatim (see the module docstring for the ":-[" range).
_PUNCTUATION = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")

# Enumeration markers, replaced in this order: "1. " disappears, later numbers become a full stop.
_ENUMERATION: tuple[tuple[str, str], ...] = (
    ("1. ", ""),
    (". 2. ", ". "),
    (". 3. ", ". "),
    (". 4. ", ". "),
    (". 5. ", ". "),
    (" 2. ", ". "),
    (" 3. ", ". "),
    (" 4. ", ". "),
    (" 5. ", ". "),
)


def _replace_repeatedly(text: str, old: str, new: str, times: int) -> str:
    """Apply ``str.replace(old, new)`` ``times`` times (R2Gen's bounded collapse of repeats)."""
    for _ in range(times):
        text = text.replace(old, new)
    return text


def _clean_sentence(sentence: str) -> str:
    """Delete quotes, slashes, backslashes, apostrophes and the punctuation class in one sentence."""
    for char in ('"', "/", "\\", "'"):
        sentence = sentence.replace(char, "")
    return _PUNCTUATION.sub("", sentence.strip().lower())


def _split_and_join(text: str) -> str:
    """Enumeration stripping, lower-casing, sentence split on ". ", per-sentence cleaning, rejoin."""
    for old, new in _ENUMERATION:
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")
    return " . ".join(_clean_sentence(s) for s in sentences) + " ."


def clean_report_iu(text: str) -> str:
    """R2Gen's IU-Xray cleaning: collapse ".." (three passes) then :func:`_split_and_join`.

    Example: ``"The heart is normal. 2. No effusion."`` -> ``"the heart is normal . no effusion ."``.
    """
    return _split_and_join(_replace_repeatedly(text, "..", ".", 3))


def clean_report_mimic(text: str) -> str:
    """R2Gen's MIMIC-CXR cleaning: newlines to spaces, collapse "__" (7 passes), double spaces
    (6 passes) and ".." (8 passes), then the same sentence cleaning as IU-Xray.

    MIMIC's "___" de-identification blanks collapse to "_" and are then deleted by the punctuation
    class.
    """
    text = text.replace("\n", " ")
    text = _replace_repeatedly(text, "__", "_", 7)
    text = _replace_repeatedly(text, "  ", " ", 6)
    text = _replace_repeatedly(text, "..", ".", 8)
    return _split_and_join(text)


def clean_report(text: str, dataset: str) -> str:
    """Clean ``text`` with the cleaner of ``dataset`` ("iu_xray" or "mimic_cxr")."""
    if dataset == "iu_xray":
        return clean_report_iu(text)
    if dataset == "mimic_cxr":
        return clean_report_mimic(text)
    raise ValueError(f"unknown dataset {dataset!r}; expected 'iu_xray' or 'mimic_cxr'")
