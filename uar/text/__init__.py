"""Report text: R2Gen cleaning and the word-level tokenizer."""

from uar.text.cleaning import clean_report, clean_report_iu, clean_report_mimic
from uar.text.tokenizer import PAD_ID, UNK, UNK_ID, TextTokenizer

__all__ = [
    "PAD_ID",
    "UNK",
    "UNK_ID",
    "TextTokenizer",
    "clean_report",
    "clean_report_iu",
    "clean_report_mimic",
]
