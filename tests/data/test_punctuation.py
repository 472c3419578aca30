"""Punctuated reports: commas kept as tokens for generation, R2Gen's form for the metrics, prose output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uar.generator import readable_findings
from uar.text import TextTokenizer, clean_report_iu
from uar.text.cleaning import drop_commas, keep_commas


def test_keep_commas_is_r2gen_plus_comma_tokens() -> None:
    text = "Heart size is normal, no effusion,, pneumothorax or consolidation. 2. Lungs are clear."
    kept = keep_commas(text, "iu_xray")
    assert kept == "heart size is normal , no effusion , pneumothorax or consolidation . lungs are clear ."
    assert drop_commas(kept) == " ".join(clean_report_iu(text).split())


def test_on_every_iu_report_the_scored_form_is_r2gens(shared_data: Path) -> None:
    data = json.loads((shared_data / "iu_xray" / "annotation.json").read_text())
    for entry in data["train"][:800]:
        r2gen = " ".join(clean_report_iu(entry["report"]).split())
        assert drop_commas(keep_commas(entry["report"], "iu_xray")) == r2gen, entry["report"]


def test_tokenizer_with_punctuation_round_trip_and_serialisation() -> None:
    reports = ["The heart is normal, the lungs are clear.", "No effusion, pneumothorax or consolidation."]
    cleaned = [TextTokenizer.clean_for("iu_xray", r, punctuation=True) for r in reports]
    tok = TextTokenizer.build(cleaned, threshold=1, max_len=30, dataset="iu_xray", punctuation=True)
    assert "," in tok.words
    decoded = tok.decode(tok.encode(reports[0]))
    assert decoded == "the heart is normal , the lungs are clear ."
    assert tok.scored(decoded) == "the heart is normal the lungs are clear ."
    assert tok.scored(decoded) == tok.clean(reports[0])
    assert readable_findings(decoded) == "The heart is normal, the lungs are clear."
    again = TextTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.punctuation and again.encode(reports[1]) == tok.encode(reports[1])
    plain = TextTokenizer.build(
        [clean_report_iu(r) for r in reports], threshold=1, max_len=30, dataset="iu_xray"
    )
    assert "," not in plain.words and plain.scored("a b .") == "a b ."
    # a tokenizer dict written before the option existed loads as R2Gen's (no commas)
    old = plain.to_dict()
    del old["punctuation"]
    assert not TextTokenizer.from_dict(old).punctuation


@pytest.mark.parametrize(
    ("decoded", "prose"),
    [
        ("the heart is normal , , no effusion .", "The heart is normal, no effusion."),
        (", lungs are are clear , .", "Lungs are clear."),
        ("right . cardiomegaly . no pneumothorax .", "Cardiomegaly. No pneumothorax."),
        ("there there is no lobar pneumonia .", "There is no lobar pneumonia."),
        ("xxxx xxxx are intact .", "xxxx are intact."),
        ("<unk> . heart size normal", "Heart size normal."),
    ],
)
def test_readable_findings(decoded: str, prose: str) -> None:
    assert readable_findings(decoded) == prose
