"""SR layout for viewers: one TEXT item per sentence in CONTINUOUS sections, TID 2000 still valid."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from operators.inference import StudyReport
from operators.sr_writer import section_text, statements, write_sr
from operators.study_loader import CXRStudy, load_studies
from plugin.settings import AppSettings
from tests.app.conftest import SMALL_CHEST_FILE, two_series_study
from tests.conftest import require_tool
from uar.generator import Report

LONG = (
    "There is a moderate right-sided pleural effusion with adjacent compressive atelectasis "
    "of the right lower lobe, and the cardiomediastinal silhouette is partly obscured."
)
FINDINGS = f"The heart is normal in size. {LONG} No pneumothorax is seen! Is the line in place? 2.5 cm mass."
IMPRESSION = "Right pleural effusion. No acute cardiopulmonary abnormality otherwise."


def test_statements_split_sentences() -> None:
    items = statements(FINDINGS)
    assert items == [
        "The heart is normal in size.",
        LONG,
        "No pneumothorax is seen!",
        "Is the line in place?",
        "2.5 cm mass.",
    ]
    assert statements("  one   sentence\n continued  ") == ["one sentence continued"]
    assert statements("") == [""]


@pytest.fixture(scope="module")
def study(dicom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CXRStudy:
    folder = tmp_path_factory.mktemp("layout") / "in"
    two_series_study(dicom_dir / SMALL_CHEST_FILE, folder)
    [study] = load_studies(folder)
    assert isinstance(study, CXRStudy)
    return study


def test_sr_has_one_item_per_sentence_and_stays_valid(study: CXRStudy, tmp_path: Path) -> None:
    report = Report(FINDINGS, IMPRESSION, {"Pleural Effusion": 1}, "uar-test", "1", [4])
    written = write_sr(StudyReport(study, report, 0.0), AppSettings(), tmp_path)
    sr = pydicom.dcmread(written.path)
    sections = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    findings, impressions = sections["Findings"], sections["Impressions"]
    assert [i.ConceptNameCodeSequence[0].CodeValue for i in findings.ContentSequence] == ["121071"] * 5
    assert [i.ConceptNameCodeSequence[0].CodeValue for i in impressions.ContentSequence] == ["121073"] * 2
    assert {i.RelationshipType for i in findings.ContentSequence} == {"CONTAINS"}
    assert findings.ContinuityOfContent == impressions.ContinuityOfContent == "CONTINUOUS"
    assert section_text(findings) == FINDINGS and section_text(impressions) == IMPRESSION
    proc = subprocess.run(
        [require_tool("dciodvfy"), str(written.path)], capture_output=True, text=True, errors="replace"
    )
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
    dump = subprocess.run(
        [require_tool("dsrdump"), "+Pl", "+Pc", "+U8", str(written.path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert dump.count('(121071,DCM,"Finding")') == 5 and dump.count('(121073,DCM,"Impression")') == 2
    assert all(f'"{sentence}"' in dump for sentence in statements(FINDINGS) + statements(IMPRESSION))
