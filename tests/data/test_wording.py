"""IU-Xray's wording slips are repaired for display, and a repair never changes a finding a sentence
states (its positive or uncertain CheXpert labels)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from uar.eval.labeler import label_sentence
from uar.generator import readable_findings
from uar.text.wording import WORDING_REPAIRS, repair_wording


@pytest.mark.parametrize(
    ("decoded", "readable"),
    [
        ("normal heart size mediastinal contours .", "Normal heart size and mediastinal contours."),
        (
            "the heart size and pulmonary vascular appear within normal limits .",
            "The heart size and pulmonary vascularity appear within normal limits.",
        ),
        (
            "the cardiac silhouette pulmonary vascularity are normal .",
            "The cardiac silhouette and pulmonary vascularity are normal.",
        ),
        ("the cardia mediastinal silhouette is normal .", "The cardiomediastinal silhouette is normal."),
        ("the heart size of the limits of normal .", "The heart size is within normal limits."),
        (
            "heart size and pulmonary vascularity appears normal limits .",
            "Heart size and pulmonary vascularity appears within normal limits.",
        ),
        ("heart size normal limits .", "Heart size within normal limits."),
        (
            "the cardiomediastinal silhouette is within normal limits for size contour .",
            "The cardiomediastinal silhouette is within normal limits for size and contour.",
        ),
        ("small right effusion the present .", "Small right effusion is present."),
        (
            "minimal streaky atelectasis the left lung base .",
            "Minimal streaky atelectasis in the left lung base.",
        ),
        (
            "there is no pneumothorax large pleural effusion .",
            "There is no pneumothorax or large pleural effusion.",
        ),
        ("no large pleural effusion no pneumothorax .", "No large pleural effusion or pneumothorax."),
        # a sentence without a known slip is unchanged
        (
            "no pneumothorax , pleural effusion , or focal airspace disease .",
            "No pneumothorax, pleural effusion, or focal airspace disease.",
        ),
    ],
)
def test_readable_findings_repairs_corpus_slips(decoded: str, readable: str) -> None:
    assert readable_findings(decoded) == readable


def test_every_repair_has_an_example_and_is_idempotent() -> None:
    examples = [
        "normal heart size mediastinal contours",
        "the cardiac silhouette pulmonary vascularity are normal",
        "the heart size and pulmonary vascular appear within normal limits",
        "the cardia mediastinal silhouette is normal",
        "the heart size of the limits of normal",
        "heart size is normal limits",
        "within normal limits for size contour",
        "a small right pleural effusion the present",
        "minimal streaky atelectasis the left lung base",
        "there is no pneumothorax large pleural effusion",
        "no large pleural effusion no pneumothorax",
        "normal cardiac size and contour unremarkable mediastinal silhouette",
    ]
    for pattern, _ in WORDING_REPAIRS:
        assert any(pattern.search(e) for e in examples), pattern.pattern
    for e in examples:
        once = repair_wording(e)
        assert once != e and repair_wording(once) == once
        assert not any(p.search(once) for p, _ in WORDING_REPAIRS)


def test_repairs_keep_the_labels_of_every_iu_xray_sentence_they_change(shared_data: Path) -> None:
    data = json.loads((shared_data / "iu_xray" / "annotation.json").read_text(encoding="utf-8"))
    sentences = {
        s.strip().lower()
        for split in data.values()
        for entry in split
        for s in re.split(r"(?<=\.)\s+", str(entry.get("report", "")))
        if s.strip()
    }
    changed = [s for s in sentences if repair_wording(s) != s]
    assert len(changed) >= 10  # the slips are real corpus sentences, not invented examples
    newly_read = set()
    for s in changed:
        before, after = label_sentence(s), label_sentence(repair_wording(s))
        for obs, value in before.items():
            if after[obs] != value:
                # only a normal the slip hid may become readable ("normal heart size mediastinal
                # contours": the mediastinum is now read as normal); never a finding or a doubt
                assert (value, after[obs]) == (None, 0), (s, obs)
                newly_read.add(obs)
    assert newly_read <= {"Enlarged Cardiomediastinum", "Cardiomegaly"}
