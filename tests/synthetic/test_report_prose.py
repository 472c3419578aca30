"""Composed reports read as prose a radiologist would sign: no doubled words, no corpus garbles,
capitalised sentences ending in a full stop, no orphan fragments."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from uar.eval.labeler import label_sentence
from uar.synthetic.report import SentenceBank, compose_report, reads_as_prose, split_report
from uar.synthetic.sampling import sample_case

DOUBLED = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)


def assert_prose(report: str) -> None:
    """The checks every composed or generated report must pass."""
    assert report.strip(), "empty report"
    for sentence in split_report(report):
        assert sentence[0].isupper() or sentence.startswith("xxxx"), sentence
        assert sentence.endswith(".") and not sentence.endswith(".."), sentence
        assert not DOUBLED.search(sentence), sentence
        assert not re.search(r"\s[,.]|,,|,\.", sentence), sentence
        words = sentence[:-1].split()
        names = any(v is not None for k, v in label_sentence(sentence).items() if k != "No Finding")
        assert len(words) >= 2 or names, f"orphan fragment: {sentence!r}"


@pytest.mark.parametrize(
    "sentence",
    [
        "There there is no lobar pneumonia.",
        "Heart size is as is within normal limits.",
        "The heart is normal size with normal appearance the cardiomediastinal silhouette.",
        "no large pleural effusions.",
        "[Pulmonary vascularity is within normal limits>].",
        "Left ankle.",
        "In the pleural spaces are clear.",
        "Of the pulmonary vascularity is prominent.",
        "The lung volumes are is somewhat low.",
    ],
)
def test_garbled_corpus_sentences_are_refused(sentence: str) -> None:
    assert not reads_as_prose(sentence)
    assert not SentenceBank.from_sentences([sentence]).sentences


def test_telegraphic_statements_are_kept() -> None:
    for sentence in ("No pneumothorax.", "Lungs clear.", "Mild cardiomegaly.", "Hyperexpanded lungs."):
        assert reads_as_prose(sentence), sentence
    assert reads_as_prose("Lingular consolidation.", states_finding=True)


def test_thousand_composed_reports_read_as_prose(shared_data: Path) -> None:
    bank = SentenceBank.from_annotation(shared_data / "iu_xray" / "annotation.json", "train")
    test_bank = SentenceBank.from_annotation(shared_data / "iu_xray" / "annotation.json", "test")
    for i in range(1000):
        case = sample_case(np.random.default_rng([11, i]))
        assert_prose(compose_report(case, bank if i % 2 else test_bank, np.random.default_rng([11, i, 1])))


def test_sentences_opening_with_a_preposition_are_kept_when_whole() -> None:
    for sentence in (
        "In the left lower lobe there is airspace disease consistent with pneumonia.",
        "On the right there is marked narrowing of the joint space.",
    ):
        assert reads_as_prose(sentence), sentence
