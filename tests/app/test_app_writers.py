"""SR and PDF writers: non-ASCII text round trip (pydicom, dsrdump), Encapsulated PDF validity."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from operators.inference import StudyReport
from operators.pdf_writer import write_pdf
from operators.sr_writer import build_sr, device_observer_uid, section_text, statements, write_sr
from operators.study_loader import CXRStudy, load_studies
from plugin.runner import run_app
from plugin.settings import AppSettings
from tests.app.conftest import SMALL_CHEST_FILE, derived_instance, two_series_study
from tests.conftest import require_tool
from uar.generator import Report, ReportGenerator

FINDINGS = "Cœur de taille normale — pas d'épanchement pleural. Lungs are clear. 肺野清晰"
IMPRESSION = "No acute cardiopulmonary abnormality — é."


@pytest.fixture(scope="module")
def study(dicom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CXRStudy:
    folder = tmp_path_factory.mktemp("writers") / "in"
    two_series_study(dicom_dir / SMALL_CHEST_FILE, folder)
    [study] = load_studies(folder)
    assert isinstance(study, CXRStudy)
    return study


@pytest.fixture(scope="module")
def report() -> Report:
    labels = {"Cardiomegaly": 0, "Pleural Effusion": 0, "Edema": -1, "Pneumonia": None}
    return Report(FINDINGS, IMPRESSION, labels, "modèle-UAR é", "1.0—β", [4, 5, 6])


def dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, errors="replace"
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_non_ascii_text_round_trips(study: CXRStudy, report: Report, tmp_path: Path) -> None:
    written = write_sr(StudyReport(study, report, 0.0), AppSettings(), tmp_path)
    sr = pydicom.dcmread(written.path)
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    texts = [section_text(item) for item in sr.ContentSequence if "ContentSequence" in item]
    assert texts[0] == FINDINGS and texts[1] == IMPRESSION
    assert "modèle-UAR é 1.0—β" in texts[2]
    assert "Edema: uncertain" in texts[2] and "Cardiomegaly: negative" in texts[2]
    names = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item.get("TextValue") or item.get("UID")
        for item in sr.ContentSequence
    }
    assert names["Device Observer Name"] == "modèle-UAR é 1.0—β"
    assert names["Device Observer UID"] == device_observer_uid(report.model_name, report.model_version)
    dump = subprocess.run(
        [require_tool("dsrdump"), "+Pl", "+U8", str(written.path)], capture_output=True, check=True
    ).stdout.decode("utf-8")
    assert all(sentence in dump for sentence in statements(FINDINGS))
    assert IMPRESSION in dump and "modèle-UAR é" in dump
    assert dciodvfy_errors(written.path) == []


def test_two_view_sr_references_both_images(study: CXRStudy, report: Report) -> None:
    sr = build_sr(study, report, AppSettings(sr_series_number=77, sr_series_description="draft"))
    [evidence] = sr.CurrentRequestedProcedureEvidenceSequence
    referenced = [
        i.ReferencedSOPInstanceUID for s in evidence.ReferencedSeriesSequence for i in s.ReferencedSOPSequence
    ]
    assert sorted(referenced) == sorted(study.sop_instance_uids)
    assert len(evidence.ReferencedSeriesSequence) == 2  # frontal and lateral series
    assert (sr.SeriesNumber, sr.SeriesDescription) == (77, "draft")
    again = build_sr(study, report, AppSettings())
    assert again.SeriesInstanceUID != sr.SeriesInstanceUID  # a new series per document


def test_encapsulated_pdf(study: CXRStudy, report: Report, tmp_path: Path) -> None:
    settings = AppSettings(write_pdf=True)
    written = write_pdf(StudyReport(study, report, 0.0), settings, tmp_path)
    ds = pydicom.dcmread(written.path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    pdf = bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength]
    assert pdf.startswith(b"%PDF-") and pdf.rstrip(b"\n").endswith(b"%%EOF")
    assert (ds.SeriesNumber, ds.SeriesDescription) == (
        settings.pdf_series_number,
        settings.pdf_series_description,
    )
    assert ds.StudyInstanceUID == study.study_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in ds.SourceInstanceSequence] == study.sop_instance_uids
    assert ds.VerificationFlag == "UNVERIFIED"
    assert dciodvfy_errors(written.path) == []


def test_report_dataclass_fields_used_by_the_writer(report: Report) -> None:
    # The SR writer relies on these Report fields (uar.generator contract).
    names = {f.name for f in dataclasses.fields(Report)}
    assert {"findings", "impression", "labels", "model_name", "model_version"} <= names
    assert report.model_version == "1.0—β"


def test_latin1_source_names_survive_in_the_utf8_sr(
    dicom_dir: Path, generator: ReportGenerator, tmp_path: Path
) -> None:
    derived_instance(
        dicom_dir / SMALL_CHEST_FILE,
        tmp_path / "in",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        SpecificCharacterSet="ISO_IR 100",
        PatientName="Müller^Zoë",
        StudyDescription="Thorax pa",
    )
    source = next((tmp_path / "in").iterdir()).read_bytes()
    assert "Müller".encode("latin-1") in source  # stored as ISO 8859-1
    result = run_app(tmp_path / "in", tmp_path / "out", generator=generator)
    sr = pydicom.dcmread(result.srs[0])
    assert str(sr.PatientName) == "Müller^Zoë"
    assert "Müller".encode() in result.srs[0].read_bytes()
    dump = subprocess.run(
        [require_tool("dsrdump"), "+U8", str(result.srs[0])], capture_output=True, check=True
    ).stdout.decode("utf-8")
    assert "Müller" in dump
    assert dciodvfy_errors(result.srs[0]) == []
