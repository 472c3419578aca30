"""R2Gen cleaning and the word tokenizer, on hand examples and the real IU-Xray annotation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from uar.text import UNK_ID, TextTokenizer, clean_report_iu, clean_report_mimic


@pytest.fixture(scope="module")
def iu(shared_data: Path) -> dict[str, list[dict]]:
    return json.loads((shared_data / "iu_xray" / "annotation.json").read_text())


@pytest.fixture(scope="module")
def iu_tok(iu: dict[str, list[dict]]) -> TextTokenizer:
    cleaned = (clean_report_iu(e["report"]) for e in iu["train"])
    return TextTokenizer.build(cleaned, threshold=3, max_len=60, dataset="iu_xray")


def test_clean_iu_basic_and_enumeration() -> None:
    text = "Heart size normal.. Lungs clear. 2. No effusion"
    assert clean_report_iu(text) == "heart size normal . lungs clear . no effusion ."
    assert clean_report_iu("The heart is normal. XXXX is stable.") == "the heart is normal . xxxx is stable ."


def test_clean_iu_keeps_r2gen_quirks() -> None:
    assert clean_report_iu("Size 21. Normal.") == "size 2normal ."  # "1. " removed inside "21. "
    assert clean_report_iu("T10 > 5mm @ level=3") == "t10  5mm  level3 ."  # ":-[" range deletes > @ =
    assert clean_report_iu("Normal. . Clear.") == "normal .  . clear ."  # empty sentence survives
    # "-" is the range operator of ":-[", not a member: hyphens stay.
    assert clean_report_iu("Left-sided (small) effusion; no 'pneumothorax'/mass.") == (
        "left-sided small effusion no pneumothoraxmass ."
    )


def test_clean_mimic() -> None:
    text = "FINDINGS:\nThe ___ is  normal.\n1. No effusion."
    assert clean_report_mimic(text) == "findings the  is normal . no effusion ."
    assert clean_report_mimic("A....B") == "ab ."  # dots collapse to one, then deleted


def test_vocabulary_from_training_split(iu: dict[str, list[dict]], iu_tok: TextTokenizer) -> None:
    assert 700 <= iu_tok.vocab_size <= 1000
    counts = Counter(w for e in iu["train"] for w in clean_report_iu(e["report"]).split())
    assert set(iu_tok.words) == {w for w, n in counts.items() if n >= 3}
    assert iu_tok.words == sorted(iu_tok.words)
    assert "." in iu_tok.words and "xxxx" in iu_tok.words
    rare = next(w for w, n in counts.items() if n == 2)
    assert rare not in iu_tok.words and iu_tok.encode(rare)[0] == UNK_ID
    test_only = {w for e in iu["test"] for w in clean_report_iu(e["report"]).split()} - set(counts)
    assert test_only and not test_only & set(iu_tok.words)


def test_round_trip_unk_and_truncation(iu_tok: TextTokenizer) -> None:
    sentence = "The heart is normal in size. The lungs are clear."
    ids = iu_tok.encode(sentence)
    assert min(ids) >= 2
    assert iu_tok.decode(ids) == "the heart is normal in size . the lungs are clear ."
    assert iu_tok.decode([*ids, 0, 5, 6]) == iu_tok.decode(ids)  # stops at eos
    with_unk = iu_tok.encode("The heart is zzqxv.")
    assert with_unk[3] == UNK_ID
    assert iu_tok.decode(with_unk) == "the heart is <unk> ."
    long = " ".join(["the lungs are clear."] * 30)  # 150 words
    assert len(iu_tok.encode(long)) == iu_tok.max_len - 1
    with pytest.raises(ValueError, match="outside the vocabulary"):
        iu_tok.decode([iu_tok.vocab_size])


def test_serialisation(iu_tok: TextTokenizer) -> None:
    d = json.loads(json.dumps(iu_tok.to_dict()))
    again = TextTokenizer.from_dict(d)
    assert again.vocab_size == iu_tok.vocab_size and again.max_len == 60 and again.dataset == "iu_xray"
    report = "No pneumothorax or pleural effusion. Heart size is within normal limits."
    assert again.encode(report) == iu_tok.encode(report)
    with pytest.raises(ValueError, match="format"):
        TextTokenizer.from_dict({"words": []})
    with pytest.raises(ValueError, match="unknown dataset"):
        TextTokenizer([], threshold=3, max_len=60, dataset="chexpert")


def test_mimic_tokenizer_threshold() -> None:
    reports = [clean_report_mimic(r) for r in ["Lungs clear.\nNo effusion."] * 10 + ["Rare word."] * 9]
    tok = TextTokenizer.build(reports, threshold=10, max_len=100, dataset="mimic_cxr")
    assert tok.words == [".", "clear", "effusion", "lungs", "no"]
    assert tok.encode("Rare lungs.") == [UNK_ID, tok.words.index("lungs") + 2, 2]
