"""Synthetic chest X-ray DICOM studies: a frontal and a lateral series of one study.

:func:`write_study` renders a :class:`~uar.data.synthetic.Case` at DICOM resolution and writes two
files, one per series, as CR Image Storage or Digital X-Ray Image Storage - For Presentation
(the case's ``acquisition.modality``), with the photometric interpretation (MONOCHROME1 / 2) and
Bits Stored (10-16) of the case, Window Center / Width, Rescale, View Position PA / AP / LL,
View Code Sequence, Patient Orientation, Image Laterality, Body Part Examined CHEST and synthetic
patient and study attributes. UIDs come from :func:`pydicom.uid.generate_uid` with deterministic
entropy sources, so the same case and seed always give the same files.

Transfer syntaxes (:data:`TRANSFER_SYNTAXES`): Explicit VR Little Endian, JPEG-LS Lossless,
JPEG 2000 Lossless and RLE Lossless are encoded with ``Dataset.compress`` (pyjpegls,
pylibjpeg-openjpeg, pydicom); pydicom has no JPEG Lossless encoder, so JPEG Lossless SV1
(Process 14, first-order prediction) is encoded by :func:`encode_jpeg_lossless_sv1` here.
"""

from __future__ import annotations

import datetime as dt
import heapq
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
from uar.data.synthetic import Case, View, render

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


# --------------------------------------------------------------------------------------------
# JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, Selection Value 1)
# --------------------------------------------------------------------------------------------
def _huffman_lengths(freq: dict[int, int]) -> dict[int, int]:
    """Code lengths (<= 16 bits) for the symbols in ``freq``; one extra dummy leaf keeps the
    all-ones code unused (ITU T.81 K.2)."""
    heap: list[tuple[int, int, list[int]]] = [(f, s, [s]) for s, f in freq.items()]
    heap.append((0, 99, [-1]))
    heapq.heapify(heap)
    depth = dict.fromkeys([*freq, -1], 0)
    while len(heap) > 1:
        f1, s1, a = heapq.heappop(heap)
        f2, s2, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (f1 + f2, min(s1, s2), a + b))
    depth.pop(-1)
    if max(depth.values()) > 16:  # pathological histograms: flat 5-bit codes for SSSS 0..16
        return dict.fromkeys(range(17), 5)
    return depth


def encode_jpeg_lossless_sv1(pixels: np.ndarray, precision: int) -> bytes:
    """Encode a (H, W) unsigned image as a JPEG Lossless SV1 codestream (ITU T.81 Process 14).

    ``precision`` (2-16) is the sample precision P in the SOF3 marker; values must be < 2**P.
    Prediction: first sample 2**(P-1), first row left neighbour, first column upper neighbour,
    elsewhere the left neighbour (selection value 1); point transform 0. One optimal Huffman
    table. Returns bytes from SOI to EOI.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {pixels.shape}")
    if not 2 <= precision <= 16:
        raise ValueError(f"precision must be 2-16 bits, got {precision}")
    x = pixels.astype(np.int64)
    if x.min() < 0 or x.max() >= 1 << precision:
        raise ValueError(f"pixel values must lie in [0, 2**{precision})")
    h, w = x.shape
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[0, 0] = 1 << (precision - 1)
    diff = (x - pred).ravel() % 65536
    diff = np.where(diff > 32768, diff - 65536, diff)  # (N,) in [-32767, 32768]
    mag = np.abs(diff)
    ssss = np.zeros(mag.shape, dtype=np.int64)
    nz = mag > 0
    ssss[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    ssss[mag == 32768] = 16
    extra = np.where(diff >= 0, diff, diff - 1) & ((1 << ssss) - 1)
    extra[ssss == 16] = 0
    # Huffman table (canonical codes in order of length, then symbol)
    symbols, counts = np.unique(ssss, return_counts=True)
    lengths = _huffman_lengths({int(s): int(c) for s, c in zip(symbols, counts, strict=True)})
    order = sorted(lengths, key=lambda s: (lengths[s], s))
    code_of = np.zeros(17, dtype=np.int64)
    len_of = np.zeros(17, dtype=np.int64)
    code, prev = 0, lengths[order[0]]
    for s in order:
        code <<= lengths[s] - prev
        prev = lengths[s]
        code_of[s], len_of[s] = code, lengths[s]
        code += 1
    bits_count = [sum(1 for s in order if lengths[s] == n) for n in range(1, 17)]
    # bit packing: each sample gives (Huffman code, SSSS extra bits), at most 32 bits together
    nbits = len_of[ssss] + np.where(ssss == 16, 0, ssss)
    value = (code_of[ssss] << np.where(ssss == 16, 0, ssss)) | extra
    aligned = (value << (32 - nbits)).astype(">u4")
    bitmat = np.unpackbits(aligned.view(np.uint8).reshape(-1, 4), axis=1)  # (N, 32)
    stream = bitmat[np.arange(32)[None, :] < nbits[:, None]]
    pad = (-len(stream)) % 8
    stream = np.concatenate([stream, np.ones(pad, dtype=np.uint8)])
    data = np.packbits(stream)
    ff = np.flatnonzero(data == 0xFF)
    data = np.insert(data, ff + 1, 0)  # byte stuffing
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision])
    out += h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    huff = bytes([0x00, *bits_count, *order])
    out += b"\xff\xc4" + (2 + len(huff)).to_bytes(2, "big") + huff
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])
    out += data.tobytes() + b"\xff\xd9"
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
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
    ds.ManufacturerModelName = "uar.data.synthetic"
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
