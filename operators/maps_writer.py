"""Optional attention-map Secondary Captures: where the model looked while writing each sentence.

With ``write_maps`` on, each generated report that has grounding maps (:attr:`uar.generator.Report.maps`)
gets one Secondary Capture Image Storage instance (1.2.840.10008.5.1.4.1.1.7, PS3.3 A.8.1) per view
the model read, built with highdicom (``highdicom.sc.SCImage``): the view's image as the loader
decoded it (display polarity, the loader's resolution, scaled by
:func:`uar.grounding_overlay.render_overlay` to 512-1024 pixels on the longer side) with every
sentence's map blended in its own colour, the sentence's number at the map's maximum and a legend of
the numbered sentences and the caption "AI attention map, not for diagnosis" under the image.

The instances go into a new series of the same study (Modality OT, the configured
``maps_series_number`` / ``maps_series_description``), frontal first (InstanceNumber 1, lateral 2),
with the patient and study attributes of the frontal source (invalid values emptied, as for the SR),
ImageType DERIVED\\SECONDARY, SC Equipment ConversionType WSD (workstation), BurnedInAnnotation YES
(the legend is text in the pixels), SourceImageSequence naming the view's source image, and the
model in ContributingEquipmentSequence. PatientOrientation is the source's when it has a valid value,
else empty (Type 2C: the picture keeps the source's rows and columns, a legend is added below);
BodyPartExamined CHEST, an unpaired part, so Laterality (Type 2C) is absent.

Withheld (out-of-domain) reports have no maps and get no Secondary Capture. A study read with its
frontal view only (the model's lateral slot then holds the frontal too) gets one picture whose map
is the sum of both slots; a one-view model gets the frontal picture only. The written headers are
attached to the study's report (:attr:`operators.inference.StudyReport.map_instances`) so that the
SR writer can reference them.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from monai.deploy.core import OperatorSpec
from pydicom import config
from pydicom.valuerep import validate_value

import uar
from operators.inference import StudyReport
from operators.settings import AppSettings
from operators.sr_writer import UTF8, WriterOperator, WrittenInstance, evidence_header, model_equipment
from operators.study_loader import CXRStudy, SourceImage, quiet_pydicom, uid_tag
from uar.generator import Report
from uar.grounding import SentenceMap
from uar.grounding_overlay import render_overlay

log = logging.getLogger(__name__)

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
IMAGE_COMMENT = (
    "AI attention map, NOT FOR DIAGNOSIS: where the report model looked while writing each numbered "
    "sentence of its draft findings. It does not show where a finding is."
)
_COPIED_OPTIONAL = ("StudyDescription", "PatientAge", "IssuerOfPatientID")
_PLACEHOLDER_ORIENTATION = ("L", "F")  # highdicom wants one; replaced by the source's value or emptied


def view_maps(study: CXRStudy, maps: list[SentenceMap]) -> list[tuple[SourceImage, int, list[SentenceMap]]]:
    """The pictures to draw: (source image, view index of the maps, maps) per view the model read.

    With the frontal view alone, a two-view model read the frontal image in both slots: its picture
    gets the sum of both slots (one view, index 0). A one-view model (maps of one view) read the
    frontal only, lateral or not.
    """
    if min(m.grids.shape[0] for m in maps) == 1:
        return [(study.frontal, 0, maps)]
    if study.lateral is not None:
        return [(study.frontal, 0, maps), (study.lateral, 1, maps)]
    merged = [
        dataclasses.replace(m, grids=m.grids.sum(axis=0, keepdims=True).astype(np.float32)) for m in maps
    ]
    return [(study.frontal, 0, merged)]


def _orientation(source: pydicom.Dataset) -> list[str] | str:
    """PatientOrientation (0020,0020) of the source when it has two valid CS values, else empty."""
    value = source.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return ""
    try:
        for part in value:
            validate_value("CS", str(part), config.RAISE)
    except ValueError:
        return ""
    return [str(part) for part in value]


def build_sc(
    study: CXRStudy,
    report: Report,
    source: SourceImage,
    pixels: np.ndarray,
    settings: AppSettings,
    *,
    series_instance_uid: str,
    instance_number: int,
) -> hd.sc.SCImage:
    """The Secondary Capture of ``pixels`` (RGB uint8 (H, W, 3), the overlay of ``source``'s view)
    in the attention-map series ``series_instance_uid`` of ``study`` (see the module docstring)."""
    header = evidence_header(study.frontal.dataset)  # invalid source values emptied, not copied
    equipment = model_equipment(report, settings, "AI attention map of a draft radiology report")
    with warnings.catch_warnings():
        # highdicom's person-name check would print the patient's name in a warning.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        sc = hd.sc.SCImage(
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=study.study_instance_uid,
            series_instance_uid=series_instance_uid,
            series_number=settings.maps_series_number,
            sop_instance_uid=hd.UID(),
            instance_number=instance_number,
            manufacturer=settings.manufacturer,
            patient_id=header.PatientID,
            patient_name=header.PatientName,
            patient_birth_date=header.PatientBirthDate,
            patient_sex=header.PatientSex,
            accession_number=header.AccessionNumber,
            study_id=header.StudyID,
            study_date=header.StudyDate,
            study_time=header.StudyTime,
            referring_physician_name=header.ReferringPhysicianName,
            patient_orientation=_PLACEHOLDER_ORIENTATION,
            contributing_equipment=[equipment],
        )
    sc.SpecificCharacterSet = UTF8
    for kw in _COPIED_OPTIONAL:
        if header.get(kw):
            setattr(sc, kw, header.get(kw))
    sc.PatientOrientation = _orientation(source.dataset)
    sc.BodyPartExamined = "CHEST"  # unpaired: Laterality (Type 2C) is then absent
    sc.SeriesDescription = settings.maps_series_description
    sc.ManufacturerModelName = "UAR Report Node"
    sc.SoftwareVersions = [uar.__version__, report.model_version]
    if settings.institution_name:
        sc.InstitutionName = settings.institution_name
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "YES"
    sc.LossyImageCompression = "00"
    sc.ImageComments = IMAGE_COMMENT
    sc.DerivationDescription = (
        f"{source.view} view with the decoder's text-to-image attention of each generated sentence "
        "blended in colour (AI attention map, not for diagnosis)"
    )
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = source.dataset.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.sop_instance_uid
    sc.SourceImageSequence = [reference]
    return sc


def write_maps(
    study_report: StudyReport, settings: AppSettings, output_folder: Path
) -> list[WrittenInstance]:
    """Draw and save the attention maps of one study report as ``SC_<SOPInstanceUID>.dcm``, one per
    view (none for a report without maps); also records them in ``study_report.map_instances``.

    All or nothing: when one picture fails, the study's pictures already saved are removed and the
    exception is raised.
    """
    study, report = study_report.study, study_report.report
    if report.withheld or not report.maps:
        return []
    written: list[WrittenInstance] = []
    try:
        _write_views(study_report, settings, output_folder, written)
    except Exception:
        for w in written:
            w.path.unlink(missing_ok=True)
        study_report.map_instances.clear()
        raise
    log.info("study %s: %d attention-map pictures written", uid_tag(study.study_instance_uid), len(written))
    return written


def _write_views(
    study_report: StudyReport, settings: AppSettings, output_folder: Path, written: list[WrittenInstance]
) -> None:
    study, report = study_report.study, study_report.report
    series_instance_uid = hd.UID()
    output_folder.mkdir(parents=True, exist_ok=True)
    for number, (source, view, maps) in enumerate(view_maps(study, report.maps), start=1):
        pixels = render_overlay(source.pixels, maps, view, view_name=source.view)
        sc = build_sc(
            study,
            report,
            source,
            pixels,
            settings,
            series_instance_uid=series_instance_uid,
            instance_number=number,
        )
        path = output_folder / f"SC_{sc.SOPInstanceUID}.dcm"
        written.append(WrittenInstance(path, sc, study.study_instance_uid, "sc"))
        sc.save_as(path, enforce_file_format=True)
        header = pydicom.Dataset()  # the instance without its pixels, for the SR's references
        for element in sc:
            if element.keyword != "PixelData":
                header.add(element)
        study_report.map_instances[source.view] = header


class MapsWriterOperator(WriterOperator):
    """Input ``reports`` (``list[StudyReport]``) -> attention-map Secondary Capture files.

    Output ``reports``: the same reports, each with the headers of its pictures in
    ``map_instances`` (the SR writer follows and references them). Written instances are kept in
    :attr:`written`. A study whose pictures cannot be written loses its pictures only (logged with
    the exception's type, never its text, which can quote received values); its SR is still written.
    """

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input("reports")
        spec.output("reports")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Write the pictures of every report that has maps, then pass the reports on."""
        reports: list[StudyReport] = op_input.receive("reports")
        self.written = []
        for r in reports:
            try:
                with quiet_pydicom():  # pydicom's warnings would quote received values
                    self.written += write_maps(r, self.settings, self.output_folder)
            except Exception as exc:
                log.warning(
                    "study %s: attention maps not written (%s)",
                    uid_tag(r.study.study_instance_uid),
                    type(exc).__name__,
                )
        op_output.emit(reports, "reports")
