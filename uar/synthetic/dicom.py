"""The DICOM writer of synthetic studies: a frontal and a lateral series of one study.

:func:`write_study` renders a :class:`~uar.synthetic.case.Case` at DICOM resolution and writes two
files, one per series, as CR Image Storage or Digital X-Ray Image Storage - For Presentation
(the case's ``acquisition.modality``), with the photometric interpretation (MONOCHROME1 / 2) and
Bits Stored (10-16) of the case, Window Center / Width, Rescale, View Position PA / AP / LL,
View Code Sequence, Patient Orientation, Image Laterality, Body Part Examined CHEST and synthetic
patient and study attributes. UIDs come from :func:`pydicom.uid.generate_uid` with deterministic
entropy sources, so the same case and seed always give the same files.

Transfer syntaxes (:data:`TRANSFER_SYNTAXES`): Explicit VR Little Endian, JPEG-LS Lossless,
JPEG 2000 Lossless and RLE Lossless are encoded with ``Dataset.compress`` (pyjpegls,
pylibjpeg-openjpeg, pydicom); pydicom has no JPEG Lossless encoder, so JPEG Lossless SV1
(Process 14, first-order prediction) is encoded by
:func:`uar.synthetic.jpeg_lossless.encode_jpeg_lossless_sv1`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from uar import __version__
from uar.synthetic.case import Case, View
from uar.synthetic.jpeg_lossless import encode_jpeg_lossless_sv1
from uar.synthetic.render import render

TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)
FIELD_OF_VIEW_MM = 430.0  # detector width covered by the image
_GIVEN = ("Alex", "Robin", "Sam", "Kim", "Jordan", "Casey", "Morgan", "Taylor", "Riley", "Jamie")
_FAMILY = ("Synthetic", "Phantom", "Testcase", "Sample", "Example", "Dummy", "Specimen", "Model")


@dataclass(frozen=True)
class StudyFiles:
    """Paths and UIDs of one written study."""

    frontal: Path
    lateral: Path
    study_uid: str
    patient_id: str
    transfer_syntax: str


def _uid(seed: int, *parts: str) -> str:
    return generate_uid(entropy_srcs=["uar-synthetic", str(seed), *parts])


def _code(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def to_stored(img: np.ndarray, bits_stored: int, photometric: str) -> np.ndarray:
    """Display image (H, W) in [0, 1] -> uint16 stored values of ``bits_stored`` bits.

    The signal uses 4 %-96 % of the range; MONOCHROME1 stores the inverse (air bright in the file).
    """
    top = (1 << bits_stored) - 1
    v = 0.04 + 0.92 * np.clip(img, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        v = 1.0 - v
    return np.round(v * top).astype(np.uint16)


@dataclass(frozen=True)
class _Patient:
    name: str
    patient_id: str
    birth_date: str
    study_date: str
    study_time: str
    accession: str


def _patient(case: Case, seed: int) -> _Patient:
    rng = np.random.default_rng([seed, case.seed, 7])
    study_day = dt.date(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
    birth = study_day - dt.timedelta(days=int(case.anatomy.age * 365.25 + rng.integers(0, 365)))
    name = f"{_FAMILY[int(rng.integers(len(_FAMILY)))]}^{_GIVEN[int(rng.integers(len(_GIVEN)))]}"
    return _Patient(
        name=name,
        patient_id=f"SYN{int(rng.integers(10**6, 10**7))}",
        birth_date=birth.strftime("%Y%m%d"),
        study_date=study_day.strftime("%Y%m%d"),
        study_time="".join(f"{int(v):02d}" for v in (rng.integers(7, 19), *rng.integers(0, 60, size=2))),
        accession=f"A{int(rng.integers(10**7, 10**8))}",
    )


def build_dataset(
    case: Case,
    view: View,
    seed: int,
    *,
    size: int = 512,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    series_number: int = 1,
) -> Dataset:
    """One CR or DX For Presentation image of ``case`` (rendered at ``size`` pixels) as a Dataset.

    ``seed`` seeds the UIDs and synthetic patient; the pixels come from ``render(case, view)``.
    """
    acq = case.acquisition
    pat = _patient(case, seed)
    dx = acq.modality == "DX"
    sop_class = DigitalXRayImageStorageForPresentation if dx else ComputedRadiographyImageStorage
    study_uid = _uid(seed, str(case.seed), "study")
    series_uid = _uid(seed, str(case.seed), "series", view)
    sop_uid = _uid(seed, str(case.seed), "instance", view)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"UAR_{__version__}"[:16]
    ds = Dataset()
    ds.file_meta = meta

    # SOP common, patient, general study
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = pat.name
    ds.PatientID = pat.patient_id
    ds.PatientBirthDate = pat.birth_date
    ds.PatientSex = case.anatomy.sex
    ds.PatientAge = f"{case.anatomy.age:03d}Y"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = pat.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = pat.study_time
    ds.AccessionNumber = pat.accession
    ds.ReferringPhysicianName = ""
    ds.StudyID = pat.accession[-6:]
    ds.StudyDescription = "XR CHEST 2 VIEWS"
    # general series and equipment
    ds.Modality = acq.modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    frontal = view == "frontal"
    position = acq.projection if frontal else "LL"
    ds.SeriesDescription = f"CHEST {position}"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = position
    ds.PatientPosition = ""
    ds.Manufacturer = "UAR Synthetic"
    ds.ManufacturerModelName = "uar.data.synthetic"  # the generator's name since 0.1.0: same bytes
    ds.SoftwareVersions = __version__
    ds.InstitutionName = "Synthetic Data"
    # image
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"] if frontal else ["P", "F"]
    ds.ImageLaterality = "U"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.KVP = 110 if frontal else 120
    ds.DistanceSourceToDetector = 1800 if acq.projection == "PA" else 1000
    ds.ExposureTime = 20 if frontal else 40
    ds.XRayTubeCurrent = 200
    spacing = FIELD_OF_VIEW_MM / size
    ds.ImagerPixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    view_code = {
        "PA": codes.SCT.PosteroAnterior,
        "AP": codes.SCT.AnteroPosterior,
        "LL": codes.SCT.LeftLateral,
    }
    if dx:  # the CR IOD has no DX Positioning module: View Code Sequence only on DX
        view_item = _code(view_code[position])
        view_item.ViewModifierCodeSequence = Sequence()
        ds.ViewCodeSequence = Sequence([view_item])
        ds.PositionerType = "NONE"
        ds.PixelSpacing = ds.ImagerPixelSpacing
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship = "LOG"
        # -1: higher values mean less X-ray intensity (bone bright, as stored in MONOCHROME2)
        ds.PixelIntensityRelationshipSign = -1 if acq.photometric == "MONOCHROME2" else 1
        ds.PresentationLUTShape = "IDENTITY" if acq.photometric == "MONOCHROME2" else "INVERSE"
        ds.AnatomicRegionSequence = Sequence([_code(codes.SCT.Chest)])
        ds.AcquisitionContextSequence = Sequence()
    # pixels
    stored = to_stored(render(case, view, size=size), acq.bits_stored, acq.photometric)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = acq.photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = acq.bits_stored
    ds.HighBit = acq.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    lo, hi = np.percentile(stored, [2.0, 99.5])
    ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 2.0):.1f}"
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = stored.tobytes()
    _set_transfer_syntax(ds, transfer_syntax, stored)
    return ds


def _set_transfer_syntax(ds: Dataset, syntax: UID, stored: np.ndarray) -> None:
    """Encode the pixel data of ``ds`` in place with the given transfer syntax."""
    if syntax == ExplicitVRLittleEndian:
        return
    if syntax == JPEGLosslessSV1:
        frame = encode_jpeg_lossless_sv1(stored, int(ds.BitsStored))
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        return
    if syntax in (JPEGLSLossless, JPEG2000Lossless, RLELossless):
        # lossless: the instance keeps its seeded SOP Instance UID (pydicom would draw a random one)
        ds.compress(syntax, stored, generate_instance_uid=False)
        return
    raise ValueError(
        f"unsupported transfer syntax {syntax}; use one of {[str(s) for s in TRANSFER_SYNTAXES]}"
    )


def write_study(
    out_dir: str | Path,
    case: Case,
    seed: int,
    *,
    size: int = 512,
    transfer_syntax: UID | str | None = None,
) -> StudyFiles:
    """Write ``case`` as one study of two series (1: frontal, 2: lateral) into ``out_dir``.

    Files: ``out_dir/frontal.dcm`` and ``out_dir/lateral.dcm``. ``transfer_syntax`` (a UID from
    :data:`TRANSFER_SYNTAXES`) defaults to one chosen from ``seed`` and ``case.seed``.
    Returns the paths, the Study Instance UID, the Patient ID and the transfer syntax used.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if transfer_syntax is None:
        pick = np.random.default_rng([seed, case.seed, 11]).integers(len(TRANSFER_SYNTAXES))
        syntax = TRANSFER_SYNTAXES[int(pick)]
    else:
        syntax = UID(str(transfer_syntax))
        if syntax not in TRANSFER_SYNTAXES:
            raise ValueError(f"unsupported transfer syntax {syntax}")
    paths: dict[str, Path] = {}
    uid, pid = "", ""
    for number, view in ((1, "frontal"), (2, "lateral")):
        ds = build_dataset(case, view, seed, size=size, transfer_syntax=syntax, series_number=number)
        path = out / f"{view}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths[view] = path
        uid, pid = str(ds.StudyInstanceUID), str(ds.PatientID)
    return StudyFiles(paths["frontal"], paths["lateral"], uid, pid, str(syntax))
