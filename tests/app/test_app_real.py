"""The app on the 10 real CR/DX files: each alone and all together.

Chest files give one valid TID 2000 Enhanced SR that references exactly the instance(s) used;
leg, hip and the animal thorax are rejected with a reason, as a JSON record in the output folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from operators.sr_writer import evidence_header, section_text, statements
from plugin.settings import AppSettings
from tests.app.conftest import CHEST_FILES, REJECTED_FILES, AppRun
from tests.conftest import require_tool

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


def evidence_uids(sr: pydicom.Dataset) -> list[str]:
    """Referenced SOPInstanceUIDs of CurrentRequestedProcedureEvidenceSequence."""
    return [
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]


def all_srs(single_runs: dict[str, AppRun], all_run: AppRun) -> list[Path]:
    return [p for run in [*single_runs.values(), all_run] for p in run.result.srs]


def test_chest_files_alone_give_one_sr_each(single_runs: dict[str, AppRun]) -> None:
    for name in CHEST_FILES:
        result = single_runs[name].result
        assert len(result.srs) == 1, name
        assert result.rejections == [], name
        source = pydicom.dcmread(single_runs[name].input_dir / name, stop_before_pixels=True)
        sr = pydicom.dcmread(result.srs[0])
        assert evidence_uids(sr) == [source.SOPInstanceUID]
        assert sr.StudyInstanceUID == source.StudyInstanceUID
        assert sr.SeriesInstanceUID != source.SeriesInstanceUID
        copied = evidence_header(source)  # the source with VR-invalid values emptied
        for keyword in ("PatientName", "PatientID", "PatientSex", "PatientBirthDate", "AccessionNumber"):
            assert sr.get(keyword) == copied.get(keyword), (name, keyword)


def test_non_chest_files_alone_are_rejected_with_a_reason(single_runs: dict[str, AppRun]) -> None:
    for name, word in REJECTED_FILES.items():
        run = single_runs[name]
        assert run.result.srs == [], name
        [rejection] = run.result.rejections
        assert word in rejection.reason, (name, rejection.reason)
        record = json.loads(Path(rejection.path).read_text())
        assert record["status"] == "rejected"
        assert record["reason"] == rejection.reason
        assert record["files"] == [name]
        source = pydicom.dcmread(run.input_dir / name, stop_before_pixels=True)
        assert record["study_instance_uid"] == source.StudyInstanceUID
        assert str(source.PatientName) not in json.dumps(record)
        assert sorted(p.name for p in run.output_dir.iterdir()) == [Path(rejection.path).name]


def test_all_files_together(all_run: AppRun, real_files: list[Path]) -> None:
    headers = {f.name: pydicom.dcmread(f, stop_before_pixels=True) for f in real_files}
    chest_studies = {headers[n].StudyInstanceUID for n in CHEST_FILES}
    rejected_studies = {headers[n].StudyInstanceUID for n in REJECTED_FILES}
    result = all_run.result
    assert len(result.srs) == len(chest_studies)
    assert {r.study.study_instance_uid for r in result.reports} == chest_studies
    assert {r.study_instance_uid for r in result.rejections} == rejected_studies
    chest_uids = {headers[n].SOPInstanceUID for n in CHEST_FILES}
    for path, study_report in zip(result.srs, result.reports, strict=True):
        sr = pydicom.dcmread(path)
        used = study_report.study.sop_instance_uids
        assert evidence_uids(sr) == used
        assert set(used) <= chest_uids
        assert sr.StudyInstanceUID == study_report.study.study_instance_uid
    # RG1 comes as lossy and lossless JPEG 2000 of one study: the lossless instance is used.
    rg1 = next(
        r.study
        for r in result.reports
        if r.study.study_instance_uid == headers[CHEST_FILES[2]].StudyInstanceUID
    )
    assert rg1.sop_instance_uids == [headers["pydicom-data__RG1_J2KR.dcm"].SOPInstanceUID]
    assert rg1.unused == [headers["pydicom-data__RG1_J2KI.dcm"].SOPInstanceUID]


def test_sr_document_attributes(all_run: AppRun, settings: AppSettings) -> None:
    for path, study_report in zip(all_run.result.srs, all_run.result.reports, strict=True):
        sr = pydicom.dcmread(path)
        report = study_report.report
        assert sr.SOPClassUID == ENHANCED_SR
        assert sr.Modality == "SR"
        assert sr.SpecificCharacterSet == "ISO_IR 192"
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2000"
        assert (sr.PreliminaryFlag, sr.CompletionFlag, sr.VerificationFlag) == (
            "PRELIMINARY",
            "COMPLETE",
            "UNVERIFIED",
        )
        assert sr.SeriesNumber == settings.sr_series_number
        assert sr.SeriesDescription == settings.sr_series_description
        [equipment] = [
            item for item in sr.ContributingEquipmentSequence if item.Manufacturer == settings.manufacturer
        ]
        assert equipment.ManufacturerModelName == report.model_name
        assert equipment.SoftwareVersions == report.model_version
        sections = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
        assert section_text(sections["Findings"]) == report.findings
        assert section_text(sections["Impressions"]) == report.impression
        assert "AI-GENERATED DRAFT" in sections["Summary"].ContentSequence[0].TextValue
        observer = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}[
            "Observer Type"
        ]
        assert observer.ConceptCodeSequence[0].CodeMeaning == "Device"


def test_every_sr_passes_dciodvfy(single_runs: dict[str, AppRun], all_run: AppRun) -> None:
    dciodvfy = require_tool("dciodvfy")
    warnings: set[str] = set()
    for path in all_srs(single_runs, all_run):
        proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, errors="replace")
        lines = (proc.stdout + proc.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert errors == [], (path.name, errors)
        # values are cut off: they can hold patient names
        warnings.update(line.split(" = <")[0] for line in lines if line.startswith("Warning"))
    print("dciodvfy warnings (all SRs):", *sorted(warnings), sep="\n  ")


def test_dsrdump_shows_the_report(all_run: AppRun) -> None:
    dsrdump = require_tool("dsrdump")
    for path, study_report in zip(all_run.result.srs, all_run.result.reports, strict=True):
        proc = subprocess.run([dsrdump, "+Pl", "+U8", str(path)], capture_output=True, check=True)
        text = proc.stdout.decode("utf-8")
        report = study_report.report
        for statement in statements(report.findings) + statements(report.impression):
            assert statement in text
        for flag in ("PRELIMINARY", "COMPLETE", "UNVERIFIED"):
            assert flag in text
        assert "AI-GENERATED DRAFT — not for clinical use" in text


@pytest.mark.parametrize("name", ["nhsx__nih-chestxray14_dx.dcm"])
def test_view_from_image_when_tags_are_missing(single_runs: dict[str, AppRun], name: str) -> None:
    [study_report] = single_runs[name].result.reports
    assert study_report.study.frontal.view_source.startswith("image frontal_score=")
    assert study_report.study.lateral is None
