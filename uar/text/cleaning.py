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

__all__ = ["COMMA", "clean_report", "clean_report_iu", "clean_report_mimic", "drop_commas", "keep_commas"]

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


COMMA = ","  # the comma token of punctuated cleaning (:func:`keep_commas`)


def _clean_sentence_keep_commas(sentence: str) -> str:
    """:func:`_clean_sentence` on each comma-separated clause, the commas kept as tokens ``" , "``;
    empty clauses (",," or a leading / trailing comma) leave no comma."""
    clauses = (" ".join(_clean_sentence(c).split()) for c in sentence.split(COMMA))
    return f" {COMMA} ".join(c for c in clauses if c)


def _split_and_join(text: str, commas: bool = False) -> str:
    """Enumeration stripping, lower-casing, sentence split on ". ", per-sentence cleaning, rejoin."""
    for old, new in _ENUMERATION:
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")
    clean = _clean_sentence_keep_commas if commas else _clean_sentence
    return " . ".join(clean(s) for s in sentences) + " ."


def clean_report_iu(text: str, *, commas: bool = False) -> str:
    """R2Gen's IU-Xray cleaning: collapse ".." (three passes) then :func:`_split_and_join`.

    Example: ``"The heart is normal. 2. No effusion."`` -> ``"the heart is normal . no effusion ."``.
    ``commas``: keep commas as tokens (:func:`keep_commas`).
    """
    return _split_and_join(_replace_repeatedly(text, "..", ".", 3), commas)


def clean_report_mimic(text: str, *, commas: bool = False) -> str:
    """R2Gen's MIMIC-CXR cleaning: newlines to spaces, collapse "__" (7 passes), double spaces
    (6 passes) and ".." (8 passes), then the same sentence cleaning as IU-Xray.

    MIMIC's "___" de-identification blanks collapse to "_" and are then deleted by the punctuation
    class.
    """
    text = text.replace("\n", " ")
    text = _replace_repeatedly(text, "__", "_", 7)
    text = _replace_repeatedly(text, "  ", " ", 6)
    text = _replace_repeatedly(text, "..", ".", 8)
    return _split_and_join(text, commas)


def clean_report(text: str, dataset: str, *, commas: bool = False) -> str:
    """Clean ``text`` with the cleaner of ``dataset`` ("iu_xray" or "mimic_cxr").

    ``commas=False`` is R2Gen's cleaning, the form every metric scores. ``commas=True`` is the same
    cleaning with the commas kept as tokens of their own (:func:`keep_commas`), so that a model
    trained on it writes clauses a reader can parse; :func:`clean_report` of its output (commas
    deleted) is again R2Gen's form.
    """
    if dataset == "iu_xray":
        return clean_report_iu(text, commas=commas)
    if dataset == "mimic_cxr":
        return clean_report_mimic(text, commas=commas)
    raise ValueError(f"unknown dataset {dataset!r}; expected 'iu_xray' or 'mimic_cxr'")


def keep_commas(text: str, dataset: str) -> str:
    """Punctuated cleaning: R2Gen's cleaning with commas kept as tokens.

    Example: ``"No effusion, pneumothorax or consolidation."`` -> ``"no effusion , pneumothorax or
    consolidation ."``.
    """
    return clean_report(text, dataset, commas=True)


def drop_commas(text: str) -> str:
    """The scored form of punctuated text: its comma tokens removed, words joined by one space.

    For text from :func:`keep_commas` this is R2Gen's cleaned form of the same report (up to
    whitespace), so that metrics stay comparable with the R2Gen family.
    """
    return " ".join(w for w in text.split() if w != COMMA)
