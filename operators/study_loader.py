"""Chest X-ray study loader: a folder of DICOM instances in, frontal (+ lateral) images per study out.

Our own loader, not the SDK's ``DICOMSeriesToVolumeOperator``: that one crashes on multi-image CR/DX
series, ignores MONOCHROME1 and reads BodyPartExamined from the wrong tag (platform.md §2).

For each StudyInstanceUID in the folder, :func:`load_studies` returns either a :class:`CXRStudy`
(the instances it will use, decoded to display-polarity images by
:func:`uar.data.dicom_pixels.dicom_to_display`) or a :class:`Rejection` with a clear reason.

Eligibility of one instance (first failing rule is its reason):

1. it is an image (Rows/Columns present; SR, PDF, presentation states etc. are ignored);
2. Modality (0008,0060) is CR or DX (Secondary Capture SOP class is fine when Modality says CR/DX);
3. single frame;
4. chest: BodyPartExamined (0018,0015), when present, contains CHEST, THORAX, LUNG or TORAX, and no
   StudyDescription / SeriesDescription / ProtocolName / ViewCodeSequence / AnatomicRegionSequence
   text names a non-chest region (leg, hip, skull, ...) without also naming the chest;
5. human: no PatientSpeciesDescription / PatientSpeciesCodeSequence other than Homo sapiens, no
   PatientBreedDescription, no veterinary species word (CANINE, FELINE, DOG, ...) in the protocol
   or description texts. The model was trained on human radiographs only.

View of one eligible instance, first rule that decides (see :func:`classify_view`):

1. ViewPosition (0018,5101): PA / AP frontal; LL / RL / LATERAL lateral; obliques and decubitus
   undecided;
2. ViewCodeSequence (0054,0220) code meanings (postero-anterior, antero-posterior, lateral);
3. SeriesDescription, ProtocolName, AcquisitionDeviceProcessingDescription and the
   PerformedProtocolCodeSequence meanings: the words PA / AP / FRONTAL vs LAT / LATERAL;
4. PatientOrientation (0020,0020) row direction: L or R frontal, A or P lateral;
5. ImageLaterality (0020,0062) B (both lungs seen) frontal; L / R say nothing about a chest view;
6. image fallback, :func:`frontal_score`: on a frontal radiograph the mediastinum is a bright
   vertical band between two dark lung fields. The score is the mean brightness of the central
   column band minus the brighter of the two flanking bands (rows 20-80 %). Measured: 450 frontal
   radiographs of the covid-chestxray set, median 0.19, 5th percentile 0.03, 1 of 450 below -0.05;
   the lateral (animal) thorax -0.09; 20 synthetic studies, frontal 0.14-0.36, lateral -0.03-0.14,
   and the frontal scored higher than the lateral in every one. So the score is used relatively
   within a study: undecided images scoring below the study's frontal (tag-decided, else the
   best-scoring undecided image) are laterals. A study whose best undecided image scores below
   ``FRONTAL_SCORE_MIN`` (-0.05) and has no tag-decided frontal has no frontal view (rejected).
   Limit: a lone untagged lateral with a bright centre is taken as frontal; real laterals rarely
   come alone and without view tags.

Choice among several candidates of one view: views decided by tags before image-guessed ones,
lossless before lossy encodings, more pixels first, then SOPInstanceUID. The chosen instances are
exactly the ones the SR references.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from pydicom import config as pydicom_config

from uar.data.dicom_guard import DicomLimits, UnsafeDicom, check_file, is_valid_uid
from uar.data.dicom_pixels import dicom_to_display

log = logging.getLogger(__name__)

View = Literal["frontal", "lateral"]

ACCEPTED_MODALITIES = ("CR", "DX")
FRONTAL_SCORE_MIN = -0.05
INVERTED_SCORE_MAX = -0.15  # a tag-declared frontal scoring below this looks polarity-inverted
# JPEG baseline / extended, JPEG-LS near-lossless, JPEG 2000 (lossy), HTJ2K (lossy)
LOSSY_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.203",
    }
)
MEDIA_STORAGE_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR

_CHEST_WORDS = re.compile(r"CHEST|THORA|LUNG|TORAX|PULMON", re.IGNORECASE)
_NON_CHEST_WORDS = re.compile(
    r"\b(ABDOMEN|ABDOMINAL|PELVIS|PELVIC|HIPS?|KNEES?|LEGS?|TIBIA|FIBULA|FEMUR|ANKLES?|FOOT|FEET|TOES?|"
    r"HANDS?|FINGERS?|WRISTS?|FOREARM|ELBOWS?|HUMERUS|ARMS?|SHOULDERS?|SKULL|HEAD|FACE|SINUS(ES)?|"
    r"MANDIBLE|DENTAL|TEETH|SPINE|CERVICAL|LUMBAR|SACRUM|BREAST|MAMMO\w*|EXTREMITY|EXTREMITIES|"
    r"CRANIO-?CAUDAL|MEDIO-?LATERAL OBLIQUE)\b",
    re.IGNORECASE,
)
_SPECIES_WORDS = re.compile(
    r"\b(CANINE|FELINE|EQUINE|BOVINE|PORCINE|OVINE|MURINE|DOGS?|CATS?|HORSES?|VETERINAR\w*)\b", re.IGNORECASE
)
_HUMAN_SPECIES = ("337915000", "L-85B00")  # SNOMED CT / SRT "Homo sapiens"
_FRONTAL_WORDS = re.compile(r"\b(PA|AP|P-A|A-P|FRONTAL|POSTERO-?ANTERIOR|ANTERO-?POSTERIOR)\b", re.IGNORECASE)
_LATERAL_WORDS = re.compile(r"\b(LAT|LATERAL|LL|RL|LLAT|RLAT)\b", re.IGNORECASE)
# Image storage SOP classes the model can read (CR, DX for presentation / processing, SC).
IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.7",
    }
)
MAX_IMAGE_SIDE = 16384  # Rows / Columns above this are refused before decoding (pixels)
MAX_IMAGE_PIXELS = 64 * 2**20  # Rows x Columns above this are refused before decoding
FILE_LIMITS = DicomLimits()  # structural limits on every input file (uar.data.dicom_guard)
# Received values are quoted in reasons only when they belong to these closed vocabularies
# (DICOM defined terms), so a reason can never carry free text a sender chose.
_MODALITIES = frozenset(
    [
        "CR",
        "DX",
        "CT",
        "MR",
        "US",
        "NM",
        "PT",
        "MG",
        "XA",
        "RF",
        "OT",
        "SC",
        "SR",
        "DOC",
        "PR",
        "KO",
        "SEG",
        "ES",
        "XC",
        "OP",
        "IO",
        "PX",
        "GM",
        "SM",
        "ECG",
        "RTIMAGE",
        "RTSTRUCT",
        "RTPLAN",
        "RTDOSE",
        "BI",
        "BMD",
        "DG",
        "LS",
        "OCT",
        "OPT",
        "REG",
        "RG",
        "TG",
    ]
)
_BODY_PARTS = frozenset(
    [
        "SKULL",
        "HEAD",
        "NECK",
        "CSPINE",
        "TSPINE",
        "LSPINE",
        "SSPINE",
        "COCCYX",
        "SPINE",
        "CHEST",
        "THORAX",
        "LUNG",
        "BREAST",
        "ABDOMEN",
        "PELVIS",
        "HIP",
        "SHOULDER",
        "CLAVICLE",
        "ELBOW",
        "ARM",
        "HUMERUS",
        "FOREARM",
        "WRIST",
        "HAND",
        "FINGER",
        "KNEE",
        "LEG",
        "FEMUR",
        "TIBIA",
        "FIBULA",
        "ANKLE",
        "FOOT",
        "TOE",
        "HEEL",
        "EXTREMITY",
        "JAW",
        "TMJ",
        "SELLA",
        "ORBIT",
        "SINUS",
        "NECKCHEST",
        "WHOLEBODY",
        "ABDOMENPELVIS",
        "CHESTABDOMEN",
        "HEART",
    ]
)
_VIEW_MEANINGS = frozenset(
    {
        "postero-anterior",
        "antero-posterior",
        "lateral",
        "left lateral",
        "right lateral",
        "frontal",
        "erect",
        "latero-medial",
        "medio-lateral",
    }
)
_ORIENTATION = re.compile(r"[LRAPHF]{1,3}")
_VIEW_POSITIONS: dict[str, View] = {
    "PA": "frontal",
    "AP": "frontal",
    "LL": "lateral",
    "RL": "lateral",
    "LAT": "lateral",
    "LATERAL": "lateral",
    "LLAT": "lateral",
    "RLAT": "lateral",
}


def _known(value: str, vocabulary: frozenset[str]) -> str:
    """``value`` when it is one of ``vocabulary`` (safe to quote), else ``"other"``."""
    return value if value in vocabulary else "other"


def uid_tag(uid: str | None) -> str:
    """A short, non-reversible tag of a UID (or of a file name, often a UID) for logs.

    Logs carry no identifiers: no patient names or IDs, and UIDs only hashed (docs/architecture.md).
    """
    if not uid:
        return "-"
    return hashlib.sha256(uid.encode()).hexdigest()[:12]


@dataclass
class SourceImage:
    """One instance chosen as a model input.

    ``dataset`` is the header only (no PixelData); ``pixels`` is float32 ``(H, W)`` in ``[0, 1]``,
    display polarity (uar convention).
    """

    path: Path
    dataset: pydicom.Dataset
    view: View
    view_source: str  # which attribute decided the view, e.g. "ViewPosition=PA"
    pixels: np.ndarray  # (H, W) float32

    @property
    def sop_instance_uid(self) -> str:
        """SOPInstanceUID (0008,0018)."""
        return str(self.dataset.SOPInstanceUID)


@dataclass
class CXRStudy:
    """A study accepted for reporting: one frontal image and an optional lateral image."""

    study_instance_uid: str
    frontal: SourceImage
    lateral: SourceImage | None
    unused: list[str] = field(default_factory=list)  # eligible SOPInstanceUIDs not used (duplicates)
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason) not usable

    def set_aside_statement(self) -> str:
        """One sentence for the report's reader about the image instances of the study that could not
        be used (our own reasons, never received values), or ``""`` when there were none."""
        if not self.set_aside:
            return ""
        n = len(self.set_aside)
        reasons = "; ".join(dict.fromkeys(reason for _, reason in self.set_aside))
        images = "image instance was" if n == 1 else "image instances were"
        return f"{n} {images} in the study but could not be used for this report ({reasons})."

    @property
    def images(self) -> list[SourceImage]:
        """The instances used, frontal first."""
        return [self.frontal] if self.lateral is None else [self.frontal, self.lateral]

    @property
    def evidence(self) -> list[pydicom.Dataset]:
        """Headers of exactly the instances used (the SR's evidence)."""
        return [image.dataset for image in self.images]

    @property
    def sop_instance_uids(self) -> list[str]:
        """SOPInstanceUIDs of the instances used, frontal first."""
        return [image.sop_instance_uid for image in self.images]


@dataclass
class Rejection:
    """A study (or a set of unreadable files) that gets no report, and why.

    ``details`` lists one reason per instance; none of the fields holds patient names or IDs.
    """

    study_instance_uid: str | None
    reason: str
    files: list[str]
    details: list[str] = field(default_factory=list)
    path: Path | None = None  # where the JSON record was written

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the rejection record."""
        return {
            "status": "rejected",
            "study_instance_uid": self.study_instance_uid,
            "reason": self.reason,
            "files": self.files,
            "details": self.details,
        }


@dataclass(eq=False)
class _Candidate:
    path: Path
    dataset: pydicom.Dataset
    view: View | None = None
    view_source: str = ""
    pixels: np.ndarray | None = None  # (H, W) float32, decoded lazily

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.get("SOPInstanceUID", ""))


def _texts(ds: pydicom.Dataset, keywords: tuple[str, ...]) -> list[tuple[str, str]]:
    """(keyword, text) pairs of the string attributes and code-sequence meanings present in ``ds``."""
    out: list[tuple[str, str]] = []
    for kw in keywords:
        value = ds.get(kw)
        if value is None or value == "":
            continue
        if isinstance(value, pydicom.Sequence):
            out.extend((kw, str(item.get("CodeMeaning", ""))) for item in value if item.get("CodeMeaning"))
        else:
            out.append((kw, str(value)))
    return out


def chest_problem(ds: pydicom.Dataset) -> str | None:
    """Why ``ds`` is not a human chest CR/DX image, or ``None`` when it is one.

    Checks Modality (0008,0060), NumberOfFrames (0028,0008), BodyPartExamined (0018,0015),
    the description texts and the subject's species (see the module docstring).
    """
    modality = str(ds.get("Modality", "")).upper()
    if modality not in ACCEPTED_MODALITIES:
        return f"Modality '{_known(modality, _MODALITIES) if modality else 'missing'}' is not CR or DX"
    try:
        frames = _as_int(ds, "NumberOfFrames") or 1
    except (TypeError, ValueError):
        return "NumberOfFrames is not a single integer"
    if frames > 1:
        return "multi-frame image (a chest radiograph is a single frame)"
    body_part = str(ds.get("BodyPartExamined", "")).strip()
    if body_part and not _CHEST_WORDS.search(body_part):
        return f"not a chest radiograph: BodyPartExamined '{_known(body_part.upper(), _BODY_PARTS)}'"
    described = _texts(
        ds,
        (
            "StudyDescription",
            "SeriesDescription",
            "ProtocolName",
            "ViewCodeSequence",
            "AnatomicRegionSequence",
        ),
    )
    for kw, text in described:
        match = _NON_CHEST_WORDS.search(text)
        if match and not _CHEST_WORDS.search(text):
            return f"not a chest radiograph: {kw} names '{match.group(0)}'"
    return _species_problem(ds)


def _species_problem(ds: pydicom.Dataset) -> str | None:
    species = str(ds.get("PatientSpeciesDescription", "")).strip()
    if species and species.lower() not in ("homo sapiens", "human"):
        return "non-human subject: PatientSpeciesDescription"
    for item in ds.get("PatientSpeciesCodeSequence", []):
        if str(item.get("CodeValue", "")) not in _HUMAN_SPECIES:
            return "non-human subject: PatientSpeciesCodeSequence"
    if str(ds.get("PatientBreedDescription", "")).strip():
        return "non-human subject: PatientBreedDescription present"
    protocol_texts = _texts(
        ds,
        (
            "AcquisitionDeviceProcessingDescription",
            "PerformedProtocolCodeSequence",
            "ProtocolName",
            "StudyDescription",
            "SeriesDescription",
        ),
    )
    for kw, text in protocol_texts:
        match = _SPECIES_WORDS.search(text)
        if match:
            return f"non-human subject: {kw} names '{match.group(0).upper()}'"
    return None


def classify_view(ds: pydicom.Dataset) -> tuple[View | None, str]:
    """View of a chest image from its attributes: ``(view, deciding attribute)``, ``(None, "")`` if undecided.

    Order: ViewPosition, ViewCodeSequence, description/protocol words, PatientOrientation,
    ImageLaterality (see the module docstring).
    """
    position = str(ds.get("ViewPosition", "")).strip().upper()
    if position in _VIEW_POSITIONS:
        return _VIEW_POSITIONS[position], f"ViewPosition={position}"
    for item in ds.get("ViewCodeSequence", []):
        meaning = str(item.get("CodeMeaning", "")).lower()
        if "oblique" in meaning:
            continue
        if "lateral" in meaning:
            return "lateral", f"ViewCodeSequence={_known(meaning, _VIEW_MEANINGS)}"
        if "posterior" in meaning or "frontal" in meaning:
            return "frontal", f"ViewCodeSequence={_known(meaning, _VIEW_MEANINGS)}"
    texts = _texts(
        ds,
        (
            "SeriesDescription",
            "ProtocolName",
            "AcquisitionDeviceProcessingDescription",
            "PerformedProtocolCodeSequence",
        ),
    )
    for kw, text in texts:
        lateral = _LATERAL_WORDS.search(text)
        frontal = _FRONTAL_WORDS.search(text)
        if lateral and not frontal:
            return "lateral", f"{kw} word '{lateral.group(0)}'"
        if frontal and not lateral:
            return "frontal", f"{kw} word '{frontal.group(0)}'"
    orientation = ds.get("PatientOrientation")
    if orientation and len(orientation) == 2 and _ORIENTATION.fullmatch(str(orientation[0]).upper()):
        row = str(orientation[0]).upper()
        if row[0] in "LR":
            return "frontal", f"PatientOrientation row={row}"
        if row[0] in "AP":
            return "lateral", f"PatientOrientation row={row}"
    if str(ds.get("ImageLaterality", "")).upper() == "B":
        return "frontal", "ImageLaterality=B"
    return None, ""


def frontal_score(image: np.ndarray) -> float:
    """Mediastinum-vs-lungs contrast of a display-polarity image ``(H, W)`` in ``[0, 1]``.

    Mean of the central column band minus the brighter of the two flanking (lung) bands, rows
    20-80 %: positive on frontal chest radiographs (a bright mediastinum between two dark lung
    fields), lower on laterals; unit: display grey levels.
    """
    h, w = image.shape
    rows = image[int(0.2 * h) : int(0.8 * h)]  # (h', W): skip neck and abdomen
    profile = rows.mean(axis=0)  # (W,)
    x = np.linspace(0.0, 1.0, w, endpoint=False)
    centre = profile[(x >= 0.44) & (x < 0.56)].mean()
    left = profile[(x >= 0.16) & (x < 0.34)].mean()
    right = profile[(x >= 0.66) & (x < 0.84)].mean()
    return float(centre - max(left, right))


def _is_lossless(ds: pydicom.Dataset) -> bool:
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    return syntax not in LOSSY_TRANSFER_SYNTAXES and str(ds.get("LossyImageCompression", "00")) != "01"


def _preference(c: _Candidate) -> tuple[int, int, int, str]:
    """Sort key: tag-decided first, lossless first, larger first, then SOPInstanceUID."""
    by_image = int(c.view_source.startswith("image"))
    pixels = int(c.dataset.get("Rows", 0)) * int(c.dataset.get("Columns", 0))
    return (by_image, int(not _is_lossless(c.dataset)), -pixels, c.sop_instance_uid)


def _decode(c: _Candidate) -> np.ndarray:
    if c.pixels is None:
        full = pydicom.dcmread(c.path)
        c.pixels = dicom_to_display(full)  # (H, W) float32 in [0, 1]
    return c.pixels


def _failure(exc: BaseException) -> str:
    """A reason for an exception that never quotes its text (messages can carry received values)."""
    if isinstance(exc, UnsafeDicom):
        return str(exc)  # generic texts chosen by uar.data.dicom_guard
    return type(exc).__name__


def _as_int(ds: pydicom.Dataset, keyword: str) -> int | None:
    """Integer value of ``keyword`` (None when absent or empty); ``ValueError`` when not one integer."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        raise ValueError(f"{keyword} has several values")
    return int(value)


def instance_problem(ds: pydicom.Dataset) -> str | None:
    """Why an image instance cannot be used or referenced by the SR, or ``None`` (generic reasons).

    Checks that every UID the SR copies is one valid UID (SOPClassUID, SOPInstanceUID,
    SeriesInstanceUID, and the file meta's MediaStorageSOPClassUID / MediaStorageSOPInstanceUID
    agree with them), that the SOP class is a CR / DX / Secondary Capture image, and that the
    Image Pixel module is consistent (Rows, Columns, SamplesPerPixel 1, MONOCHROME1/2,
    BitsAllocated 8 or 16, BitsStored <= BitsAllocated, HighBit = BitsStored - 1).
    """
    meta = getattr(ds, "file_meta", pydicom.Dataset())
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"):
        if not is_valid_uid(ds.get(keyword)):
            return f"{keyword} is not a valid UID"
    if str(ds.SOPClassUID) not in IMAGE_SOP_CLASSES:
        return "SOP class is not a CR, DX or Secondary Capture image"
    if str(meta.get("MediaStorageSOPInstanceUID", ds.SOPInstanceUID)) != str(ds.SOPInstanceUID):
        return "SOPInstanceUID differs from the file meta information"
    if str(meta.get("MediaStorageSOPClassUID", ds.SOPClassUID)) != str(ds.SOPClassUID):
        return "SOPClassUID differs from the file meta information"
    try:
        rows, columns = _as_int(ds, "Rows"), _as_int(ds, "Columns")
        samples = _as_int(ds, "SamplesPerPixel")
        allocated, stored = _as_int(ds, "BitsAllocated"), _as_int(ds, "BitsStored")
        high, frames = _as_int(ds, "HighBit"), _as_int(ds, "NumberOfFrames")
        representation = _as_int(ds, "PixelRepresentation")
    except (TypeError, ValueError):
        return "an Image Pixel attribute is not a single integer"
    if not rows or not columns or not 0 < rows <= MAX_IMAGE_SIDE or not 0 < columns <= MAX_IMAGE_SIDE:
        return "Rows or Columns missing, zero or too large"
    if rows * columns > MAX_IMAGE_PIXELS:
        return "image has too many pixels"
    if samples != 1 or str(ds.get("PhotometricInterpretation", "")) not in ("MONOCHROME1", "MONOCHROME2"):
        return "not a greyscale image (SamplesPerPixel 1, MONOCHROME1 or MONOCHROME2)"
    if allocated not in (8, 16) or stored is None or not 0 < stored <= allocated:
        return "BitsAllocated / BitsStored inconsistent"
    if high != stored - 1:
        return "HighBit is not BitsStored - 1"
    if representation not in (0, 1) or (frames is not None and frames < 1):
        return "PixelRepresentation or NumberOfFrames invalid"
    return None


def _read_headers(folder: Path) -> tuple[dict[str, list[_Candidate]], list[str], list[str]]:
    """Group the DICOM files under ``folder`` by StudyInstanceUID.

    Also returns the names of files set aside before grouping (not DICOM, beyond the structural
    limits of :data:`FILE_LIMITS`, or without a valid StudyInstanceUID / SOPInstanceUID) and one
    generic reason per such file.
    """
    studies: dict[str, list[_Candidate]] = {}
    unreadable: list[str] = []
    details: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            check_file(path, FILE_LIMITS)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for _ in ds.iterall():  # convert every element now: undecodable values fail here
                pass
            if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY_SOP_CLASS:
                continue
            study_uid = ds.get("StudyInstanceUID")
            valid = is_valid_uid(study_uid) and is_valid_uid(ds.get("SOPInstanceUID"))
        except Exception as exc:  # anything pydicom raises on hostile bytes (zlib.error, ...)
            log.warning("skipping file %s: not readable as DICOM (%s)", uid_tag(path.name), _failure(exc))
            unreadable.append(path.name)
            details.append(f"{path.name}: not readable as DICOM ({_failure(exc)})")
            continue
        if not valid:
            log.warning("skipping file %s: no valid StudyInstanceUID or SOPInstanceUID", uid_tag(path.name))
            unreadable.append(path.name)
            details.append(f"{path.name}: no valid StudyInstanceUID or SOPInstanceUID")
            continue
        studies.setdefault(str(study_uid), []).append(_Candidate(path=path, dataset=ds))
    return studies, unreadable, details


def _dedupe(images: list[_Candidate], study_uid: str) -> list[_Candidate]:
    """One candidate per SOPInstanceUID: the newest file wins (a re-sent instance replaces the old one)."""
    by_uid: dict[str, _Candidate] = {}
    for c in sorted(images, key=lambda c: (c.path.stat().st_mtime, str(c.path))):
        if c.sop_instance_uid in by_uid:
            log.warning(
                "study %s: files %s and %s share a SOPInstanceUID; using the newer file",
                uid_tag(study_uid),
                uid_tag(by_uid[c.sop_instance_uid].path.name),
                uid_tag(c.path.name),
            )
        by_uid[c.sop_instance_uid] = c
    return sorted(by_uid.values(), key=lambda c: str(c.path))


def _views_from_images(eligible: list[_Candidate]) -> None:
    """Assign a view to the candidates the tags left undecided, from :func:`frontal_score` (rule 6).

    Every candidate is already decoded.
    """
    scores = {id(c): frontal_score(_decode(c)) for c in eligible if c.view is None}
    undecided = sorted((c for c in eligible if id(c) in scores), key=lambda c: -scores[id(c)])
    if not undecided:
        return
    tagged_frontals = [c for c in eligible if c.view == "frontal"]
    if tagged_frontals:
        # Relative to the study's own frontal: lower-scoring images are its lateral views.
        reference = max(frontal_score(_decode(c)) for c in tagged_frontals)
    elif scores[id(undecided[0])] >= FRONTAL_SCORE_MIN:
        reference = scores[id(undecided[0])]
    else:
        reference = float("inf")  # no image looks frontal
    for c in undecided:
        c.view = "frontal" if scores[id(c)] >= reference else "lateral"
        c.view_source = f"image frontal_score={scores[id(c)]:.3f}"


def _select(study_uid: str, instances: list[_Candidate]) -> CXRStudy | Rejection:
    files = [c.path.name for c in instances]
    is_image = [("Rows" in c.dataset and "Columns" in c.dataset) for c in instances]
    for c, image in zip(instances, is_image, strict=True):
        if not image:
            log.info("study %s: ignoring non-image file %s", uid_tag(study_uid), uid_tag(c.path.name))
    images = _dedupe([c for c, image in zip(instances, is_image, strict=True) if image], study_uid)
    if not images:
        return Rejection(study_uid, "no image instances in the study", files)
    set_aside: list[tuple[str, str]] = []  # (file name, reason) of each instance not usable
    eligible: list[_Candidate] = []
    for c in images:
        # One bad instance is set aside with its reason; the study goes on with the others.
        try:
            problem = chest_problem(c.dataset) or instance_problem(c.dataset)
            if problem is None:
                c.view, c.view_source = classify_view(c.dataset)
                _decode(c)
        except Exception as exc:
            problem = (
                f"instance not usable: pixel data not decodable or attributes unreadable ({_failure(exc)})"
            )
        if problem is not None:
            set_aside.append((c.path.name, problem))
            continue
        eligible.append(c)
    details = [f"{name}: {problem}" for name, problem in set_aside]
    if not eligible:
        problems = {problem for _, problem in set_aside}
        reason = set_aside[0][1] if len(problems) == 1 else "no chest CR/DX image in the study"
        return Rejection(study_uid, reason, files, details)
    _views_from_images(eligible)
    chosen: dict[View, _Candidate] = {}
    for view in ("frontal", "lateral"):
        candidates = sorted((c for c in eligible if c.view == view), key=_preference)
        if candidates:
            chosen[view] = candidates[0]
    if "frontal" not in chosen:
        views = ", ".join(f"{c.path.name}: {c.view} ({c.view_source})" for c in eligible if c.view)
        return Rejection(study_uid, "no frontal view", files, details + ([views] if views else []))
    frontal = chosen["frontal"]
    if not frontal.view_source.startswith("image") and frontal_score(frontal.pixels) < INVERTED_SCORE_MAX:
        log.warning(
            "study %s: frontal file %s looks inverted (dark mediastinum); check PhotometricInterpretation",
            uid_tag(study_uid),
            uid_tag(frontal.path.name),
        )
    used = {id(c) for c in chosen.values()}
    unused = [c.sop_instance_uid for c in eligible if id(c) not in used]

    def source(c: _Candidate) -> SourceImage:
        assert c.view is not None and c.pixels is not None
        return SourceImage(c.path, c.dataset, c.view, c.view_source, c.pixels)

    lateral = chosen.get("lateral")
    for name, problem in set_aside:
        log.warning("study %s: instance %s set aside: %s", uid_tag(study_uid), uid_tag(name), problem)
    return CXRStudy(
        study_uid, source(chosen["frontal"]), source(lateral) if lateral else None, unused, set_aside
    )


def load_studies(folder: str | Path) -> list[CXRStudy | Rejection]:
    """Load every study under ``folder`` (recursive): a :class:`CXRStudy` or a :class:`Rejection` each.

    Unreadable / non-DICOM files are gathered in one extra :class:`Rejection` with
    ``study_instance_uid=None``. A failure in one study never stops the others.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {folder}")
    with quiet_pydicom():
        return _load(folder)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """No per-value validation warnings from pydicom (they quote received values), e.g. while loading.

    The loader applies its own rules (:func:`instance_problem`, :func:`chest_problem`) instead, and
    the SR writer validates what it copies (``sr_writer.evidence_header``).
    """
    settings = pydicom_config.settings
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = modes


def _load(folder: Path) -> list[CXRStudy | Rejection]:
    grouped, unreadable, unreadable_details = _read_headers(folder)
    out: list[CXRStudy | Rejection] = []
    for study_uid, instances in grouped.items():
        try:
            result = _select(study_uid, instances)
        except Exception as exc:  # one broken study must not stop the others
            # The message can quote attribute values: it goes to the record, not to the log.
            files = [c.path.name for c in instances]
            result = Rejection(study_uid, f"loading failed ({_failure(exc)})", files)
        if isinstance(result, CXRStudy):
            log.info(
                "study %s: frontal by %s, lateral %s, %d unused",
                uid_tag(study_uid),
                result.frontal.view_source,
                f"by {result.lateral.view_source}" if result.lateral else "absent",
                len(result.unused),
            )
        else:
            log.warning("study %s rejected: %s", uid_tag(study_uid), result.reason)
        out.append(result)
    if unreadable:
        out.append(Rejection(None, "not readable as DICOM", unreadable, unreadable_details))
    return out


def rejection_file_name(study_instance_uid: str | None) -> str:
    """``rejection_<16 hex digits of SHA-256 of the StudyInstanceUID>.json`` (``rejection_unreadable.json``).

    Nothing received becomes part of a path: the name is a hash, whatever the UID holds.
    """
    if not study_instance_uid:
        return "rejection_unreadable.json"
    digest = hashlib.sha256(study_instance_uid.encode("utf-8", "replace")).hexdigest()[:16]
    return f"rejection_{digest}.json"


def write_rejection(rejection: Rejection, output_folder: str | Path) -> Path:
    """Write ``rejection`` as :func:`rejection_file_name` in ``output_folder``; set ``.path``."""
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    path = output_folder / rejection_file_name(rejection.study_instance_uid)
    path.write_text(json.dumps(rejection.to_dict(), indent=2) + "\n", encoding="utf-8")
    rejection.path = path
    return path


class CXRStudyLoaderOperator(Operator):
    """Source operator: loads the studies of ``input_folder``, writes rejection records to ``output_folder``.

    Output ports: ``studies`` (``list[CXRStudy]``) and ``rejections`` (``list[Rejection]``, optional
    receiver). The latest rejections are also kept in :attr:`rejections` for the runner.
    """

    def __init__(
        self, fragment: Fragment, *args: Any, input_folder: Path, output_folder: Path, **kwargs: Any
    ) -> None:
        self.input_folder = Path(input_folder)
        self.output_folder = Path(output_folder)
        self.rejections: list[Rejection] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the output ports."""
        spec.output("studies")
        spec.output("rejections").condition(ConditionType.NONE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Load the studies, write one JSON record per rejection, emit both lists."""
        results = load_studies(self.input_folder)
        studies = [r for r in results if isinstance(r, CXRStudy)]
        self.rejections = [r for r in results if isinstance(r, Rejection)]
        for rejection in self.rejections:
            write_rejection(rejection, self.output_folder)
        op_output.emit(studies, "studies")
        op_output.emit(self.rejections, "rejections")
