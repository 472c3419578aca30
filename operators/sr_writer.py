"""SR writer: one DICOM Enhanced SR (TID 2000 Basic Diagnostic Imaging Report) per draft report.

Built with highdicom (platform.md §5). Document content tree::

    CONTAINER X-Ray Report (LN 43468-8), TID 2000, SEPARATE
      HAS CONCEPT MOD  Language of Content Item and Descendants = en-US (TID 1204)
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID / Name / Manufacturer / Model (TID 1001)
      CONTAINS TEXT Comment (DCM 121106) = out-of-domain warning (only when out of domain)
      CONTAINS CODE Input domain check (99UARRN IDC) = within / outside / no check (TID 2002 items)
      CONTAINS NUM Input domain score, Input domain threshold (99UARRN, unit "1"; when checked)
      CONTAINS CONTAINER Findings (LN 59776-5), CONTINUOUS
        CONTAINS TEXT Finding (DCM 121071) = one generated sentence (one item per sentence)
          INFERRED FROM IMAGE Illustration of ROI (DCM 121200) = its attention-map Secondary
                                 Capture, one item per view (only with write_maps, see below)
      CONTAINS CONTAINER Impressions (LN 19005-8), CONTINUOUS
        CONTAINS TEXT Impression (DCM 121073) = one rule-derived sentence (one item per sentence)
      CONTAINS CONTAINER Summary (LN 55112-7)
        CONTAINS TEXT Summary (LN 55112-7) = AI draft statement, model, labeler observations

Findings and Impressions hold one TEXT item per sentence (:func:`statements`) inside a CONTINUOUS
container: a viewer that lists items shows one statement per row, and one that honours the
continuity (OHIF 3.13 renders CONTINUOUS items as wrapping inline text) shows the section as one
paragraph that wraps at the viewport's edge. (OHIF puts a Finding of a SEPARATE container in a
non-wrapping ``<pre>``, so a long finding would be cut off there; that is why the containers stay
CONTINUOUS.) :func:`section_text` reads a section back as one string.

Document attributes: SpecificCharacterSet ISO_IR 192 (UTF-8; highdicom leaves it empty and
non-ASCII text would become "?"), PreliminaryFlag PRELIMINARY, CompletionFlag COMPLETE,
VerificationFlag UNVERIFIED, CurrentRequestedProcedureEvidenceSequence = exactly the instances the
model read (and the attention-map pictures the SR references), patient and study attributes copied
from them (highdicom), a new series with the configured SeriesNumber and SeriesDescription, and a
ContributingEquipmentSequence item naming the model and its version (IHE AIR provenance).

Attention maps (``write_maps``, :mod:`operators.maps_writer`): each Finding whose sentence has a
grounding map gets one IMAGE child per view picture, relationship INFERRED FROM, concept "Illustration
of ROI" (DCM 121200, CID 7003 "Diagnostic Imaging Report Purposes of Reference"), as TID 2002 (Report
Narrative) allows under a TEXT observation; the pictures are in the same study, so they join the
source images in CurrentRequestedProcedureEvidenceSequence (highdicom files evidence by study; every
instance the content tree references must be listed as evidence). A sentence without a map (the
Impression, a withheld report) has no IMAGE item.

Input domain (docs/ood.md, :func:`domain_items`): every SR says whether the model's input check
found the images within its validated input domain. Out-of-domain reports (policy ``flag``) carry a
warning first in the document and in the Summary, and the series description
``ood_sr_series_description``; withheld ones (policy ``withhold``) have no generated findings: the
Findings and Impression sections state why, and the series description is
``withheld_sr_series_description``.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import highdicom as hd
import pydicom
from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from pydicom import config
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import validate_value

import uar
from operators.inference import StudyReport
from operators.settings import AppSettings
from operators.study_loader import CXRStudy, Rejection, quiet_pydicom, uid_tag, write_rejection
from uar.generator import Report

log = logging.getLogger(__name__)
# highdicom logs the source SOPInstanceUIDs at INFO while copying attributes; our logs carry no
# unhashed UIDs (docs/architecture.md), so only its warnings and errors pass.
logging.getLogger("highdicom").setLevel(logging.WARNING)

UTF8 = "ISO_IR 192"
PROCESSING_EQUIPMENT = hd.sr.CodedConcept("109102", "DCM", "Processing Equipment")  # CID 7005
AI_DRAFT_STATEMENT = (
    "AI-GENERATED DRAFT — not for clinical use without review by a qualified radiologist. "
    "This text was produced automatically by a report-generation model and has not been verified."
)
# Patient / General Study attributes highdicom reads from the first evidence dataset.
_EVIDENCE_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
# Patient and study attributes copied into the SR, checked against their VR.
_VALIDATED = (
    *_EVIDENCE_TYPE2,
    "IssuerOfPatientID",
    "PatientBirthTime",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "StudyDescription",
)
_LANGUAGE_NAMES = {"en-US": "English (United States)", "en-GB": "English (United Kingdom)", "en": "English"}
_LABEL_WORDS = {1: "positive", 0: "negative", -1: "uncertain"}
# A sentence ends at ".", "!" or "?" followed by white space; decimals ("2.5 cm") do not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class WrittenInstance:
    """A DICOM instance written to the output folder (``kind`` "sr", "pdf" or "sc", an attention map)."""

    path: Path
    dataset: pydicom.Dataset
    study_instance_uid: str
    kind: Literal["sr", "pdf", "sc"]


def device_observer_uid(model_name: str, model_version: str) -> str:
    """A stable Device Observer UID for one model name + version (same model, same UID)."""
    return generate_uid(entropy_srcs=["uar-report-node device observer", model_name, model_version])


def labels_text(labels: dict[str, int | None]) -> str:
    """Mentioned observations in the labeler's order, e.g. ``"Cardiomegaly: positive; Edema: uncertain"``."""
    lines = [f"{name}: {_LABEL_WORDS[value]}" for name, value in labels.items() if value is not None]
    return "; ".join(lines) if lines else "no observation mentioned"


def summary_text(report: Report, set_aside: str = "") -> str:
    """The Summary section text: the AI draft statement, the model and how the impression was made,
    with the input-domain statement (first when the image is out of domain, see :func:`domain_warning`),
    then ``set_aside`` (which instances of the study could not be used, if any)."""
    model = f"Model: {report.model_name} {report.model_version}."
    warning = domain_warning(report)
    if report.withheld:
        text = f"{warning} {AI_DRAFT_STATEMENT} {model}"
    else:
        text = (
            f"{AI_DRAFT_STATEMENT} {model} "
            "The impression is derived by rules from the automatic labeler's reading of the generated "
            f"findings (labeler observations: {labels_text(report.labels)})."
        )
        text = f"{warning} {text}" if warning else f"{text} {report.domain.statement()}"
    return f"{text} {set_aside}" if set_aside else text


def statements(text: str) -> list[str]:
    """The sentences of ``text``, one TEXT item value each (runs of white space become one space).

    Sentences end at ``.``, ``!`` or ``?`` followed by white space, so "2.5 cm" stays whole.
    Text without any sentence (empty or blank) gives ``[text]`` so the section keeps its item.
    """
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(text.strip())]
    return [s for s in sentences if s] or [text]


def section_text(section: pydicom.Dataset) -> str:
    """The TEXT items of an SR section container read back as one string (items joined by " ")."""
    return " ".join(
        str(item.TextValue) for item in section.get("ContentSequence", []) if item.ValueType == "TEXT"
    )


def _section(
    title: hd.sr.CodedConcept, item: hd.sr.CodedConcept, texts: list[str]
) -> hd.sr.ContainerContentItem:
    section = hd.sr.ContainerContentItem(
        name=title, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS, is_content_continuous=True
    )
    section.ContentSequence = [
        hd.sr.TextContentItem(name=item, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        for text in texts
    ]
    return section


ATTENTION_MAP_PURPOSE = hd.sr.CodedConcept("121200", "DCM", "Illustration of ROI")  # CID 7003


def map_references(
    report: Report, findings: list[str], map_instances: Mapping[str, pydicom.Dataset]
) -> list[list[hd.sr.ImageContentItem]]:
    """The IMAGE items under each Finding statement of ``findings``: one per attention-map picture
    (frontal first) for a statement whose sentence has a grounding map, none otherwise.

    Statements and maps are matched in order by their text (a map's sentence is the readable
    sentence as it appears in the findings).
    """
    pictures = [map_instances[v] for v in ("frontal", "lateral") if v in map_instances]
    out: list[list[hd.sr.ImageContentItem]] = [[] for _ in findings]
    if report.withheld or not pictures:
        return out
    sentences = [m.sentence for m in report.maps]
    j = 0
    for i, text in enumerate(findings):
        if text in sentences[j:]:
            j = sentences.index(text, j) + 1
            out[i] = [
                hd.sr.ImageContentItem(
                    name=ATTENTION_MAP_PURPOSE,
                    referenced_sop_class_uid=str(p.SOPClassUID),
                    referenced_sop_instance_uid=str(p.SOPInstanceUID),
                    relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
                )
                for p in pictures
            ]
    return out


def build_content(
    report: Report,
    settings: AppSettings,
    map_instances: Mapping[str, pydicom.Dataset] | None = None,
    set_aside: str = "",
) -> hd.sr.ContainerContentItem:
    """The TID 2000 content tree of ``report`` (see the module docstring); ``map_instances``: the
    headers of its attention-map pictures by view, referenced from the Findings they ground;
    ``set_aside``: :meth:`CXRStudy.set_aside_statement`, appended to the Summary."""
    root = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("43468-8", "LN", settings.report_title),
        template_id="2000",
        is_content_continuous=False,
    )
    language = hd.sr.LanguageOfContentItemAndDescendants(
        language=hd.sr.CodedConcept(
            settings.language, "RFC5646", _LANGUAGE_NAMES.get(settings.language, settings.language)
        )
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(report.model_name, report.model_version),
            name=f"{report.model_name} {report.model_version}",
            manufacturer_name=settings.manufacturer,
            model_name=report.model_name,
        ),
    )
    content = [*language, *observer, *domain_items(report)]
    findings = _section(codes.LN.Findings, codes.DCM.Finding, statements(report.findings))
    references = map_references(report, statements(report.findings), map_instances or {})
    for item, images in zip(findings.ContentSequence, references, strict=True):
        if images:
            item.ContentSequence = images
    content.append(findings)
    content.append(_section(codes.LN.Impressions, codes.DCM.Impression, statements(report.impression)))
    content.append(_section(codes.LN.Summary, codes.LN.Summary, [summary_text(report, set_aside)]))
    root.ContentSequence = content
    return root


# --- input-domain statement (docs/ood.md) ---------------------------------------------------------
UAR_SCHEME = "99UARRN"  # private coding scheme of this product (PS3.3 8.2: "99" prefix)
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")
INPUT_DOMAIN_CHECK = hd.sr.CodedConcept("IDC", UAR_SCHEME, "Input domain check")
INPUT_DOMAIN_SCORE = hd.sr.CodedConcept("IDS", UAR_SCHEME, "Input domain score")
INPUT_DOMAIN_THRESHOLD = hd.sr.CodedConcept("IDT", UAR_SCHEME, "Input domain threshold")
DOMAIN_CODES = {
    "in_domain": hd.sr.CodedConcept("IDC-IN", UAR_SCHEME, "Within the model's validated input domain"),
    "out_of_domain": hd.sr.CodedConcept("IDC-OUT", UAR_SCHEME, "Outside the model's validated input domain"),
    "unchecked": hd.sr.CodedConcept("IDC-NONE", UAR_SCHEME, "No input domain check (model not calibrated)"),
}
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")


def domain_warning(report: Report) -> str:
    """The prominent statement of an out-of-domain report ("" when the image is within the domain
    or the model has no check): withheld findings, or findings to be read with that in mind."""
    domain = report.domain
    if not domain.out_of_domain:
        return ""
    if report.withheld:
        return f"NOT REPORTED. {domain.statement()} No generated findings are released for this study."
    return (
        f"WARNING: OUTSIDE THE MODEL'S VALIDATED INPUT DOMAIN. {domain.statement()} The findings below "
        "were generated anyway and are likely to be wrong; read the images without relying on them."
    )


def domain_items(report: Report) -> list[hd.sr.ContentItem]:
    """Content items under the document root, before the sections: the warning (out of domain),
    the coded verdict and, for a calibrated model, the score and threshold (NUM, no units)."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    domain = report.domain
    items: list[hd.sr.ContentItem] = []
    warning = domain_warning(report)
    if warning:
        items.append(hd.sr.TextContentItem(name=COMMENT, value=warning, relationship_type=contains))
    items.append(
        hd.sr.CodeContentItem(
            name=INPUT_DOMAIN_CHECK, value=DOMAIN_CODES[domain.verdict], relationship_type=contains
        )
    )
    for name, value in ((INPUT_DOMAIN_SCORE, domain.score), (INPUT_DOMAIN_THRESHOLD, domain.threshold)):
        if value is not None:
            items.append(
                hd.sr.NumContentItem(
                    name=name, value=round(value, 3), unit=NO_UNITS, relationship_type=contains
                )
            )
    return items


def declare_coding_scheme(sr: pydicom.Dataset) -> None:
    """Identify the private scheme of :func:`domain_items` in CodingSchemeIdentificationSequence."""
    item = pydicom.Dataset()
    item.CodingSchemeDesignator = UAR_SCHEME
    item.CodingSchemeName = "UAR Report Node input-domain codes"
    item.CodingSchemeResponsibleOrganization = "UAR Report Node"
    schemes = [
        s for s in sr.get("CodingSchemeIdentificationSequence", []) if s.CodingSchemeDesignator != UAR_SCHEME
    ]
    sr.CodingSchemeIdentificationSequence = [*schemes, item]


def domain_series_description(report: Report, settings: AppSettings) -> str:
    """SeriesDescription (0008,103E) of the SR: says so when the image is out of domain."""
    if report.withheld:
        return settings.withheld_sr_series_description
    if report.domain.out_of_domain:
        return settings.ood_sr_series_description
    return settings.sr_series_description


def evidence_header(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of a source header fit for highdicom to copy Patient / Study attributes from.

    Type 2 attributes the source lacks are added empty (Type 2 allows it), and values invalid for
    their VR (e.g. a hash in PatientBirthDate, a 56-character AccessionNumber, PatientAge "81") are
    emptied rather than copied into an SR that would fail validation. Only the attribute keyword is
    logged, never the value.
    """
    header = copy.deepcopy(ds)
    for kw in _EVIDENCE_TYPE2:
        if kw not in header:
            setattr(header, kw, "")
    for kw in _VALIDATED:
        if kw not in header:
            continue
        element = header.data_element(kw)
        if element.value in (None, ""):
            continue
        if element.VM != 1:  # every one of these attributes is single-valued (VM 1)
            log.warning("source %s has several values; left empty", kw)
            element.value = ""
            continue
        try:
            validate_value(element.VR, str(element.value), config.RAISE)
        except ValueError:
            log.warning("source %s is not a valid %s value; left empty", kw, element.VR)
            element.value = ""
    return header


def build_sr(
    study: CXRStudy,
    report: Report,
    settings: AppSettings,
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    map_instances: Mapping[str, pydicom.Dataset] | None = None,
) -> hd.sr.EnhancedSR:
    """The Enhanced SR of ``report`` on ``study``, referencing exactly ``study.evidence`` and the
    attention-map pictures ``map_instances`` (headers by view, see :func:`map_references`).

    New UIDs are generated when ``series_instance_uid`` / ``sop_instance_uid`` are not given.
    """
    with warnings.catch_warnings():
        # highdicom's person-name check would print the patient's name in a warning.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        sr = _enhanced_sr(study, report, settings, series_instance_uid, sop_instance_uid, map_instances or {})
    sr.SpecificCharacterSet = UTF8
    sr.PreliminaryFlag = "PRELIMINARY"
    declare_coding_scheme(sr)
    return sr


def model_equipment(report: Report, settings: AppSettings, description: str) -> hd.ContributingEquipment:
    """The report model as processing equipment (a ContributingEquipmentSequence item): Manufacturer
    from ``settings``, ManufacturerModelName and SoftwareVersions from ``report``, and
    ContributionDescription ``description``."""
    return hd.ContributingEquipment(
        manufacturer=settings.manufacturer,
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=report.model_name,
        software_versions=report.model_version,
        contribution_description=description,
    )


class WriterOperator(Operator):
    """Base of the operators that write DICOM files of reports: ``output_folder``, ``settings`` and
    the latest list of instances written (:attr:`written`, read by the runner)."""

    def __init__(
        self, fragment: Fragment, *args: Any, output_folder: Path, settings: AppSettings, **kwargs: Any
    ) -> None:
        self.output_folder = Path(output_folder)
        self.settings = settings
        self.written: list[WrittenInstance] = []
        super().__init__(fragment, *args, **kwargs)


def _enhanced_sr(
    study: CXRStudy,
    report: Report,
    settings: AppSettings,
    series_instance_uid: str | None,
    sop_instance_uid: str | None,
    map_instances: Mapping[str, pydicom.Dataset],
) -> hd.sr.EnhancedSR:
    equipment = model_equipment(report, settings, "AI draft radiology report generation")
    return hd.sr.EnhancedSR(
        evidence=[evidence_header(ds) for ds in study.evidence] + list(map_instances.values()),
        content=build_content(report, settings, map_instances, study.set_aside_statement()),
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=settings.sr_series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=settings.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=settings.institution_name or None,
        contributing_equipment=[equipment],
        series_description=domain_series_description(report, settings),
        manufacturer_model_name="UAR Report Node",
        software_versions=uar.__version__,
        specific_character_set=UTF8,
    )


def write_sr(study_report: StudyReport, settings: AppSettings, output_folder: Path) -> WrittenInstance:
    """Build the SR of one study report and save it as ``SR_<SOPInstanceUID>.dcm``."""
    study = study_report.study
    sr = build_sr(study, study_report.report, settings, map_instances=study_report.map_instances)
    output_folder.mkdir(parents=True, exist_ok=True)
    path = output_folder / f"SR_{sr.SOPInstanceUID}.dcm"
    sr.save_as(path, enforce_file_format=True)
    log.info(
        "study %s: SR written (%d evidence instances)", uid_tag(study.study_instance_uid), len(study.images)
    )
    return WrittenInstance(path, sr, study.study_instance_uid, "sr")


class SRWriterOperator(WriterOperator):
    """Input ``reports`` (``list[StudyReport]``) -> SR files; output ``instances`` (list of WrittenInstance).

    The output port needs no receiver; a sender operator can follow it. The latest list is also
    kept in :attr:`written` for the runner, the studies no SR could be built for in :attr:`rejections`.
    """

    def __init__(self, fragment: Fragment, *args: Any, **kwargs: Any) -> None:
        self.rejections: list[Rejection] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input("reports")
        spec.output("instances").condition(ConditionType.NONE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Write one SR per report and emit what was written."""
        reports: list[StudyReport] = op_input.receive("reports")
        self.written, self.rejections = [], []
        for r in reports:
            try:
                with quiet_pydicom():  # pydicom's warnings would quote received values
                    self.written.append(write_sr(r, self.settings, self.output_folder))
            except Exception as exc:  # a study the SR cannot be built for gets a rejection record
                self.rejections.append(_writer_rejection(r, exc, self.output_folder))
        op_output.emit(self.written, "instances")


def _writer_rejection(study_report: StudyReport, exc: Exception, output_folder: Path) -> Rejection:
    """Record (without the exception's text, which can quote received values) why no SR was written."""
    study = study_report.study
    log.warning("study %s: SR not written (%s)", uid_tag(study.study_instance_uid), type(exc).__name__)
    files = [image.path.name for image in study.images]
    rejection = Rejection(study.study_instance_uid, f"SR could not be written ({type(exc).__name__})", files)
    write_rejection(rejection, output_folder)
    return rejection
