"""Seeded mutations of the real CR/DX files for the fuzz tests (tests/fuzz/).

:func:`mutants` yields :class:`Mutant` objects: a Part 10 file (for the app) and the bare data set
in one transfer syntax with the C-STORE request UIDs (for the node). Free-text values carry
:data:`CANARY` so the tests can prove no received value reaches a log, status output or a
non-DICOM file; path-like UIDs carry :data:`TRAVERSAL`.
"""

from __future__ import annotations

import copy
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

CANARY = "QZXCANARY"  # never a UID character: cannot hide inside a valid UID
TRAVERSAL = "RELTRAV"
BASE_FILES = (
    "highdicom__dx_image.dcm",  # DX, 38 KB, explicit VR LE
    "dwv__gdcm-CR-MONO1-10-chest.dcm",  # CR PA chest, 388 KB, explicit VR LE
    "torchxrayvision__siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",  # JPEG
)
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
BAD_UIDS = (
    "",
    " ",
    ".",
    "01.02.03",
    f"1.2.3/../{TRAVERSAL}",
    f"/tmp/{TRAVERSAL}.dcm",
    "1.2.\x00.3",
    "1.2..3",
    "1." + "9" * 70,
    "1.2.3\\1.2.4",
    f"1.2.{CANARY}",
    "1.2.3" + ".4" * 40,
    "9" * 65536,
)
TEXT_KEYWORDS = (
    "BodyPartExamined",
    "Modality",
    "ViewPosition",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "PatientSpeciesDescription",
    "PatientOrientation",
    "ImageLaterality",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "PatientAge",
)


@dataclass
class Mutant:
    """One mutated instance: ``kind`` names the mutation class."""

    kind: str
    file_bytes: bytes  # Part 10 file: preamble, file meta, data set
    dataset_bytes: bytes  # the data set alone, encoded in ``transfer_syntax``
    transfer_syntax: str
    sop_class: str  # Affected SOP Class UID of the C-STORE request
    sop_uid: str  # Affected SOP Instance UID of the C-STORE request


@contextmanager
def lax_pydicom() -> Iterator[None]:
    """Let pydicom read and write invalid values without warnings (the point of the mutations)."""
    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def encode_dataset(ds: Dataset, syntax: str) -> bytes:
    """``ds`` encoded in ``syntax`` (deflate applied for Deflated Explicit VR LE)."""
    fp = DicomBytesIO()
    fp.is_little_endian = syntax != ExplicitVRBigEndian
    fp.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = packer.compress(raw) + packer.flush()
        raw += b"\x00" * (len(raw) % 2)
    return raw


def part10(ds: Dataset, dataset_bytes: bytes, syntax: str, meta: Dataset | None = None) -> bytes:
    """Preamble + file meta (from ``meta`` or ``ds``) + ``dataset_bytes``."""
    fm = FileMetaDataset()
    fm.FileMetaInformationVersion = b"\x00\x01"
    src = meta if meta is not None else Dataset()
    fm.MediaStorageSOPClassUID = src.get("MediaStorageSOPClassUID", ds.get("SOPClassUID", ""))
    fm.MediaStorageSOPInstanceUID = src.get("MediaStorageSOPInstanceUID", ds.get("SOPInstanceUID", ""))
    fm.TransferSyntaxUID = syntax
    fm.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    out = BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, fm, enforce_standard=False)  # empty UIDs allowed, no group length
    meta_bytes = fp.getvalue()
    out.write(struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(meta_bytes)) + meta_bytes)
    out.write(dataset_bytes)
    return out.getvalue()


class Mutator:
    """Seeded source of mutants built from the real files in ``dicom_dir``."""

    def __init__(self, dicom_dir: Path, seed: int, weights: tuple[int, ...] = (1, 1, 1)) -> None:
        self.rng = random.Random(seed)
        self.weights = weights
        with lax_pydicom():
            self.bases = [pydicom.dcmread(dicom_dir / name) for name in BASE_FILES]
        self.ops: list[tuple[str, Callable[[Dataset], tuple[Dataset, str] | Mutant]]] = [
            ("bad_uid", self._bad_uid),
            ("drop_attribute", self._drop),
            ("pixel_module", self._pixel_module),
            ("canary_text", self._canary_text),
            ("canary_code_meaning", self._canary_code),
            ("deep_sequence", self._deep_sequence),
            ("many_items", self._many_items),
            ("meta_mismatch", self._meta_mismatch),
            ("sr_labelled_cr", self._sr_labelled_cr),
            ("unknown_sop_class", self._unknown_sop_class),
            ("lying_syntax", self._lying_syntax),
            ("truncated", self._truncated),
            ("byte_flips", self._byte_flips),
            ("corrupt_meta_length", self._corrupt_meta_length),
            ("valid", self._valid),
        ]

    def fresh(self, base: Dataset | None = None, study_uid: str | None = None) -> Dataset:
        """A copy of a base file with new Study / Series / SOP Instance UIDs."""
        ds = copy.deepcopy(base if base is not None else self.rng.choices(self.bases, self.weights)[0])
        ds.StudyInstanceUID = study_uid or generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    def mutant(self, kind: str | None = None) -> Mutant:
        """One mutant of ``kind`` (random when None)."""
        ops = dict(self.ops)
        name = kind or self.rng.choice([n for n, _ in self.ops])
        with lax_pydicom():
            ds = self.fresh()
            out = ops[name](ds)
            if isinstance(out, Mutant):
                return out
            ds, syntax = out
            return self._encode(name, ds, syntax)

    def _encode(
        self, kind: str, ds: Dataset, syntax: str | None = None, meta: Dataset | None = None
    ) -> Mutant:
        file_meta = getattr(ds, "file_meta", None)
        original = str(file_meta.TransferSyntaxUID) if file_meta is not None else ExplicitVRLittleEndian
        if syntax is None:
            syntax = original if original not in NATIVE_SYNTAXES else self.rng.choice(NATIVE_SYNTAXES)
        raw = encode_dataset(ds, syntax)
        return Mutant(
            kind,
            part10(ds, raw, syntax, meta),
            raw,
            syntax,
            str(ds.get("SOPClassUID", "")),
            str(ds.get("SOPInstanceUID", "")),
        )

    # --- the mutation classes ------------------------------------------------------------------
    def _valid(self, ds: Dataset) -> tuple[Dataset, str | None]:
        return ds, None

    def _bad_uid(self, ds: Dataset) -> tuple[Dataset, str | None]:
        keyword = self.rng.choice(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"))
        value = self.rng.choice(BAD_UIDS)
        if "\\" in value:
            ds[keyword].value = value.split("\\")
        else:
            ds[keyword].value = value
        if keyword == "SOPInstanceUID":
            ds.file_meta.MediaStorageSOPInstanceUID = value
        return ds, None

    def _drop(self, ds: Dataset) -> tuple[Dataset, str | None]:
        keyword = self.rng.choice(
            ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "BitsAllocated", "PixelData")
            + ("ViewPosition", "Modality", "PhotometricInterpretation", "SamplesPerPixel", "HighBit")
        )
        if keyword in ds:
            del ds[keyword]
        return ds, None

    def _pixel_module(self, ds: Dataset) -> tuple[Dataset, str | None]:
        choice = self.rng.randrange(8)
        if choice == 0:
            ds.BitsStored = int(ds.BitsAllocated) + 4
        elif choice == 1:
            ds.HighBit = int(ds.BitsStored) + 3
        elif choice == 2:
            ds.BitsAllocated = 7
        elif choice == 3:
            ds.Rows = 0
        elif choice == 4:
            ds.PhotometricInterpretation = "PALETTE COLOR"
        elif choice == 5:
            ds.SamplesPerPixel = 3
        elif choice == 6:
            ds.Rows = 60000
            ds.Columns = 60000
        else:
            ds["Rows"].value = [int(ds.Rows), 2]
        return ds, None

    def _canary_text(self, ds: Dataset) -> tuple[Dataset, str | None]:
        for keyword in self.rng.sample(TEXT_KEYWORDS, 3):
            value = f"{CANARY}/../{TRAVERSAL}" if self.rng.random() < 0.5 else f"{CANARY} KNEE"
            ds[keyword] = pydicom.DataElement(keyword, pydicom.datadict.dictionary_VR(keyword), value)
        if self.rng.random() < 0.3:  # a patient name sent with VR UI
            ds["PatientName"] = pydicom.DataElement(0x00100010, "UI", f"{CANARY}.1.2")
        return ds, None

    def _canary_code(self, ds: Dataset) -> tuple[Dataset, str | None]:
        item = Dataset()
        item.CodeValue = "R-10214"
        item.CodingSchemeDesignator = "SRT"
        item.CodeMeaning = self.rng.choice(
            (f"{CANARY} lateral", f"{CANARY} postero-anterior", f"{CANARY} leg")
        )
        ds.ViewCodeSequence = Sequence([item])
        if "ViewPosition" in ds:
            del ds.ViewPosition
        if self.rng.random() < 0.5:
            species = Dataset()
            species.CodeValue = CANARY
            species.CodingSchemeDesignator = "99X"
            species.CodeMeaning = CANARY
            ds.PatientSpeciesCodeSequence = Sequence([species])
        return ds, None

    def _deep_sequence(self, ds: Dataset) -> Mutant:
        """ContentSequence nested 20, 300 or 1000 deep (undefined lengths), appended as raw bytes."""
        depth = self.rng.choice((20, 300, 1000))
        syntax = self.rng.choice((ExplicitVRLittleEndian, ImplicitVRLittleEndian))
        if syntax == ExplicitVRLittleEndian:
            opener = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
        else:
            opener = struct.pack("<HHL", 0x0040, 0xA730, 0xFFFFFFFF)
        item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        seq_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        nested = (opener + item) * depth + (item_end + seq_end) * depth
        raw = encode_dataset(ds, syntax) + nested
        return Mutant(
            "deep_sequence", part10(ds, raw, syntax), raw, syntax, str(ds.SOPClassUID), str(ds.SOPInstanceUID)
        )

    def _many_items(self, ds: Dataset) -> Mutant:
        n = self.rng.choice((6000, 20000))
        raw = encode_dataset(ds, ExplicitVRLittleEndian) + items_bytes(n)
        return Mutant(
            "many_items",
            part10(ds, raw, ExplicitVRLittleEndian),
            raw,
            ExplicitVRLittleEndian,
            str(ds.SOPClassUID),
            str(ds.SOPInstanceUID),
        )

    def _meta_mismatch(self, ds: Dataset) -> Mutant:
        meta = Dataset()
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        return self._encode("meta_mismatch", ds, None, meta)

    def _sr_labelled_cr(self, ds: Dataset) -> tuple[Dataset, str | None]:
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR, but Modality CR and pixels
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.Modality = "CR"
        return ds, None

    def _unknown_sop_class(self, ds: Dataset) -> tuple[Dataset, str | None]:
        ds.SOPClassUID = "1.2.826.0.1.3680043.8.498.999.1"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        return ds, None

    def _lying_syntax(self, ds: Dataset) -> Mutant:
        """Raw explicit VR LE bytes declared as deflated, JPEG or big endian."""
        raw = encode_dataset(ds, ExplicitVRLittleEndian)
        syntax = self.rng.choice((DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, ExplicitVRBigEndian))
        return Mutant(
            "lying_syntax", part10(ds, raw, syntax), raw, syntax, str(ds.SOPClassUID), str(ds.SOPInstanceUID)
        )

    def _truncated(self, ds: Dataset) -> Mutant:
        m = self._encode("truncated", ds, ExplicitVRLittleEndian)
        cut = self.rng.randrange(len(m.dataset_bytes) // 4, len(m.dataset_bytes) - 1)
        if self.rng.random() < 0.5 and "PixelData" in ds:  # PixelData cut in half, lengths kept
            ds.PixelData = bytes(ds.PixelData)[: len(ds.PixelData) // 2]
            return self._encode("truncated", ds, ExplicitVRLittleEndian)
        m.dataset_bytes = m.dataset_bytes[:cut]
        m.file_bytes = part10(ds, m.dataset_bytes, ExplicitVRLittleEndian)
        return m

    def _byte_flips(self, ds: Dataset) -> Mutant:
        m = self._encode("byte_flips", ds, ExplicitVRLittleEndian)
        data = bytearray(m.dataset_bytes)
        header = min(len(data), 4000)  # flip in the header, where structure lives
        for _ in range(self.rng.randint(1, 12)):
            data[self.rng.randrange(header)] = self.rng.randrange(256)
        m.dataset_bytes = bytes(data)
        m.file_bytes = part10(ds, m.dataset_bytes, ExplicitVRLittleEndian)
        return m

    def _corrupt_meta_length(self, ds: Dataset) -> Mutant:
        m = self._encode("corrupt_meta_length", ds, ExplicitVRLittleEndian)
        data = bytearray(m.file_bytes)
        (length,) = struct.unpack_from("<L", data, 140)
        struct.pack_into("<L", data, 140, length + self.rng.choice((-7, -2, 2, 9, 1000)))
        m.file_bytes = bytes(data)
        return m


def items_bytes(n: int) -> bytes:
    """ReferencedImageSequence (0008,1140) of ``n`` small items, explicit VR LE, undefined lengths."""
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 10) + struct.pack("<HH2sH", 0x0008, 0x0100, b"SH", 2) + b"1 "
    return (
        struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
        + item * n
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )


def deflate_bomb(mutator: Mutator, inflated_mib: int = 64) -> Mutant:
    """A deflated data set whose private OB element (0009,1000) inflates to ``inflated_mib`` MiB."""
    with lax_pydicom():
        ds = mutator.fresh(mutator.bases[0])
        explicit = encode_dataset(ds, ExplicitVRLittleEndian)
    header = struct.pack("<HH2sHL", 0x0009, 0x1000, b"OB", 0, inflated_mib * 2**20)
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = b"\x00" * 2**20
    chunks = [packer.compress(header), *(packer.compress(zeros) for _ in range(inflated_mib))]
    raw = b"".join([*chunks, packer.compress(explicit), packer.flush()])
    raw += b"\x00" * (len(raw) % 2)
    syntax = DeflatedExplicitVRLittleEndian
    return Mutant(
        "deflate_bomb", part10(ds, raw, syntax), raw, syntax, str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    )


def sequence_bomb(mutator: Mutator, items: int = 150_000) -> Mutant:
    """A data set with a sequence of ``items`` small items (explicit VR LE)."""
    with lax_pydicom():
        ds = mutator.fresh(mutator.bases[0])
        raw = encode_dataset(ds, ExplicitVRLittleEndian) + items_bytes(items)
    syntax = ExplicitVRLittleEndian
    return Mutant(
        "sequence_bomb", part10(ds, raw, syntax), raw, syntax, str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    )
