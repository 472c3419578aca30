"""Optional Encapsulated PDF of the draft report, for viewers that do not render SR text.

The PDF is drawn with fpdf2 and wrapped in an Encapsulated PDF Storage instance
(1.2.840.10008.5.1.4.1.1.104.1, PS3.3 A.45.1) built with pydicom: Patient and General Study
attributes copied from the frontal source image, a new series (Modality DOC) with the configured
SeriesNumber / SeriesDescription, SC Equipment ConversionType WSD, BurnedInAnnotation YES (the PDF
shows patient data), VerificationFlag UNVERIFIED, and SourceInstanceSequence naming exactly the
images the model read.

Text uses DejaVu Sans when the font file is installed (any Unicode text); otherwise fpdf2's core
Helvetica, which covers Latin-1 only, and other characters are replaced by "?" (PDF only; the SR
always keeps the exact text).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from monai.deploy.core import ConditionType, OperatorSpec
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

import uar
from operators.inference import StudyReport
from operators.settings import AppSettings
from operators.sr_writer import UTF8, WriterOperator, WrittenInstance, evidence_header, summary_text
from operators.study_loader import CXRStudy, uid_tag
from uar.generator import Report

log = logging.getLogger(__name__)

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
UNICODE_FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)
# Patient / General Study attributes copied from the source (Type 2: written even when empty).
_COPIED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_COPIED_OPTIONAL = ("StudyDescription", "PatientAge", "IssuerOfPatientID")


def render_pdf(study: CXRStudy, report: Report, settings: AppSettings) -> bytes:
    """One-page PDF: AI draft banner, Findings, Impression, summary (model, labeler observations)."""
    pdf = FPDF(format="A4")
    pdf.set_title("AI draft radiology report")
    pdf.set_creator(f"UAR Report Node {uar.__version__}")
    font_path = next((p for p in UNICODE_FONT_PATHS if p.is_file()), None)
    if font_path is not None:
        pdf.add_font("DejaVu", fname=str(font_path))
        family = "DejaVu"
    else:
        family = "Helvetica"

    def write(size_pt: int, line_mm: float, s: str) -> None:
        if font_path is None:
            s = s.encode("latin-1", "replace").decode("latin-1")
        pdf.set_font(family, size=size_pt)
        pdf.multi_cell(0, line_mm, s, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.add_page()
    write(14, 8, f"{settings.report_title} — AI-GENERATED DRAFT, NOT VERIFIED")
    date = str(study.frontal.dataset.get("StudyDate", "")) or "unknown"
    views = ", ".join(image.view for image in study.images)
    write(9, 5, f"Study date: {date}   Views: {views}")
    for heading, body in (
        ("Findings", report.findings),
        ("Impression", report.impression),
        ("About this report", summary_text(report, study.set_aside_statement())),
    ):
        pdf.ln(4)
        write(12, 7, heading)
        write(10, 5, body)
    return bytes(pdf.output())


def build_pdf_dataset(
    study: CXRStudy, report: Report, pdf_bytes: bytes, settings: AppSettings
) -> pydicom.Dataset:
    """Encapsulated PDF Storage instance of ``pdf_bytes`` in a new series of ``study``."""
    source = evidence_header(study.frontal.dataset)  # invalid source values emptied, not copied
    now = dt.datetime.now()
    sop_instance_uid = hd.UID()
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = UTF8
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    for kw in _COPIED_TYPE2:
        setattr(ds, kw, source.get(kw, ""))
    for kw in _COPIED_OPTIONAL:
        if source.get(kw):
            setattr(ds, kw, source.get(kw))
    ds.StudyInstanceUID = study.study_instance_uid
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = hd.UID()
    ds.SeriesNumber = settings.pdf_series_number
    ds.SeriesDescription = settings.pdf_series_description
    ds.Manufacturer = settings.manufacturer
    ds.ManufacturerModelName = "UAR Report Node"
    ds.SoftwareVersions = [uar.__version__, report.model_version]
    if settings.institution_name:
        ds.InstitutionName = settings.institution_name
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = f"{settings.report_title} (AI draft, not verified)"
    concept = pydicom.Dataset()
    concept.CodeValue = "43468-8"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = settings.report_title
    ds.ConceptNameCodeSequence = [concept]
    ds.VerificationFlag = "UNVERIFIED"
    sources = []
    for image in study.images:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = image.dataset.SOPClassUID
        item.ReferencedSOPInstanceUID = image.sop_instance_uid
        sources.append(item)
    ds.SourceInstanceSequence = sources
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    # OB values have even length: pad with a NUL and record the true length (PS3.3 C.24.2.1).
    ds.EncapsulatedDocumentLength = len(pdf_bytes)
    ds.EncapsulatedDocument = pdf_bytes + (b"\x00" if len(pdf_bytes) % 2 else b"")
    return ds


def write_pdf(study_report: StudyReport, settings: AppSettings, output_folder: Path) -> WrittenInstance:
    """Render, wrap and save the PDF of one study report as ``PDF_<SOPInstanceUID>.dcm``."""
    study, report = study_report.study, study_report.report
    ds = build_pdf_dataset(study, report, render_pdf(study, report, settings), settings)
    output_folder.mkdir(parents=True, exist_ok=True)
    path = output_folder / f"PDF_{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    log.info("study %s: Encapsulated PDF written", uid_tag(study.study_instance_uid))
    return WrittenInstance(path, ds, study.study_instance_uid, "pdf")


class PDFWriterOperator(WriterOperator):
    """Input ``reports`` (``list[StudyReport]``) -> PDF files.

    Output ``instances`` (``list[WrittenInstance]``, no receiver needed); also kept in :attr:`written`.
    """

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input("reports")
        spec.output("instances").condition(ConditionType.NONE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Write one Encapsulated PDF per report and emit what was written."""
        reports: list[StudyReport] = op_input.receive("reports")
        self.written = [write_pdf(r, self.settings, self.output_folder) for r in reports]
        op_output.emit(self.written, "instances")
