"""Structural limits on untrusted DICOM encodings, checked on the bytes before pydicom decodes them.

pydicom decodes what it is given: a deflated data set is inflated in one piece (a 0.5 MiB stream
can become a 256 MiB element), a sequence of 150 000 items becomes 150 000 Dataset objects, and
sequences nested a few hundred deep end in ``RecursionError``. :func:`check_dataset_bytes` walks
the encoding without building any object (tags, VRs and lengths only; values are skipped) and
raises :class:`UnsafeDicom` when a limit of :class:`DicomLimits` is exceeded or the encoding is
inconsistent (a length running past the end, an item outside a sequence). :func:`check_file` does
the same for a Part 10 file, including its File Meta Information group length.

Reasons are generic texts chosen here; they never quote a received value, so they are safe in
logs and rejection records.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_VR

DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_MiB = 2**20


# PS3.5 9.1: components of digits without leading zeros, separated by dots, at most 64 characters.
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(uid: object) -> bool:
    """True if ``uid`` is a single string that follows the DICOM UID grammar (PS3.5 9.1)."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and _UID_RE.fullmatch(uid) is not None


class UnsafeDicom(ValueError):
    """The encoding exceeds a :class:`DicomLimits` bound or is structurally broken (generic reason)."""


@dataclass(frozen=True)
class DicomLimits:
    """Bounds on one data set.

    ``max_bytes``: size of the (inflated) data set; ``max_inflate_ratio``: inflated / deflated size
    allowed above 1 MiB inflated; ``max_elements``: data elements, nested ones included;
    ``max_items``: sequence items and pixel data fragments in total; ``max_depth``: sequence nesting.
    """

    max_bytes: int = 128 * _MiB
    max_inflate_ratio: float = 100.0
    max_elements: int = 20_000
    max_items: int = 5_000
    max_depth: int = 12


def inflate(data: bytes | memoryview, limits: DicomLimits) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set (raw deflate, PS3.5 A.5) within ``limits``."""
    cap = min(limits.max_bytes, max(_MiB, int(limits.max_inflate_ratio * len(data))))
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error:
        raise UnsafeDicom("deflated data set cannot be inflated") from None
    if len(out) > cap or inflater.unconsumed_tail:
        raise UnsafeDicom("deflated data set inflates beyond the size or ratio limit")
    return out


class _Scanner:
    def __init__(self, buf: bytes | memoryview, explicit: bool, little: bool, limits: DicomLimits) -> None:
        self.buf = buf
        self.explicit = explicit
        self.limits = limits
        e = "<" if little else ">"
        self.tag = struct.Struct(f"{e}HH")
        self.u16 = struct.Struct(f"{e}H")
        self.u32 = struct.Struct(f"{e}L")
        self.elements = 0
        self.items = 0

    def _u32(self, pos: int) -> int:
        return int(self.u32.unpack_from(self.buf, pos)[0])

    def _read_tag(self, pos: int) -> int:
        if pos + 8 > len(self.buf):
            raise UnsafeDicom("data set is truncated")
        group, elem = self.tag.unpack_from(self.buf, pos)
        return (group << 16) | elem

    def elements_until(self, pos: int, end: int | None, depth: int, explicit: bool) -> int:
        """Scan elements from ``pos`` to ``end`` (None: until an item delimiter); return the end offset."""
        stop = len(self.buf) if end is None else end
        while pos < stop:
            tag = self._read_tag(pos)
            if tag == _ITEM_END:
                if end is not None:
                    raise UnsafeDicom("item delimiter inside a defined-length item")
                return pos + 8
            if tag in (_ITEM, _SEQ_END):
                raise UnsafeDicom("item tag outside a sequence")
            self.elements += 1
            if self.elements > self.limits.max_elements:
                raise UnsafeDicom("too many data elements")
            if explicit:
                vr = bytes(self.buf[pos + 4 : pos + 6])
                if vr in _LONG_VRS:
                    if pos + 12 > len(self.buf):
                        raise UnsafeDicom("data set is truncated")
                    length, pos = self._u32(pos + 8), pos + 12
                else:
                    length, pos = int(self.u16.unpack_from(self.buf, pos + 6)[0]), pos + 8
            else:
                vr = b"SQ" if dictionary_vr(tag) == "SQ" else b""
                length, pos = self._u32(pos + 4), pos + 8
            if length == UNDEFINED:
                if tag == _PIXEL_DATA:
                    pos = self.fragments(pos)
                elif vr in (b"SQ", b"UN", b"") or not explicit:
                    # UN / implicit with undefined length: an implicit VR little endian sequence
                    pos = self.sequence(pos, None, depth + 1, explicit and vr == b"SQ")
                else:
                    raise UnsafeDicom("undefined length on a value that cannot have one")
                continue
            if pos + length > stop:
                raise UnsafeDicom("a value runs past the end of the data set")
            if vr == b"SQ":
                self.sequence(pos, pos + length, depth + 1, explicit)
            pos += length
        if end is None:
            raise UnsafeDicom("undefined-length item without its delimiter")
        return pos

    def sequence(self, pos: int, end: int | None, depth: int, explicit: bool) -> int:
        """Scan the items of a sequence; return the offset after it (after its delimiter if undefined)."""
        if depth > self.limits.max_depth:
            raise UnsafeDicom("sequences nested too deep")
        stop = len(self.buf) if end is None else end
        while pos < stop:
            tag = self._read_tag(pos)
            length = self._u32(pos + 4)
            pos += 8
            if tag == _SEQ_END:
                if end is not None:
                    raise UnsafeDicom("sequence delimiter inside a defined-length sequence")
                return pos
            if tag != _ITEM:
                raise UnsafeDicom("a sequence holds something that is not an item")
            self.items += 1
            if self.items > self.limits.max_items:
                raise UnsafeDicom("too many sequence items")
            if length == UNDEFINED:
                pos = self.elements_until(pos, None, depth, explicit)
            else:
                if pos + length > stop:
                    raise UnsafeDicom("an item runs past the end of its sequence")
                self.elements_until(pos, pos + length, depth, explicit)
                pos += length
        if end is None:
            raise UnsafeDicom("undefined-length sequence without its delimiter")
        return pos

    def fragments(self, pos: int) -> int:
        """Scan encapsulated pixel data items up to the sequence delimiter."""
        while True:
            tag = self._read_tag(pos)
            length = self._u32(pos + 4)
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM or length == UNDEFINED:
                raise UnsafeDicom("encapsulated pixel data is malformed")
            self.items += 1
            if self.items > self.limits.max_items:
                raise UnsafeDicom("too many pixel data fragments")
            if pos + length > len(self.buf):
                raise UnsafeDicom("a pixel data fragment runs past the end of the data set")
            pos += length


def dictionary_vr(tag: int) -> str:
    """The VR of ``tag`` in pydicom's dictionary, ``""`` for private or unknown tags."""
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def check_dataset_bytes(
    data: bytes | memoryview, transfer_syntax: str, limits: DicomLimits | None = None
) -> bytes | memoryview:
    """Check an encoded data set (no file meta) against ``limits``; return its (inflated) bytes.

    ``transfer_syntax`` decides the encoding (implicit / explicit VR, byte order, deflate).
    Raises :class:`UnsafeDicom` with a generic reason.
    """
    limits = limits or DicomLimits()
    if len(data) > limits.max_bytes:
        raise UnsafeDicom("data set larger than the size limit")
    if transfer_syntax == DEFLATED:
        data = inflate(data, limits)
    explicit = transfer_syntax != IMPLICIT_LE
    scanner = _Scanner(data, explicit, transfer_syntax != EXPLICIT_BE, limits)
    scanner.elements_until(0, len(data), 0, explicit)
    return data


def read_file_meta(raw: bytes) -> tuple[str, int]:
    """(TransferSyntaxUID, offset of the data set) of a Part 10 file; checks the meta group length.

    Raises :class:`UnsafeDicom` when the preamble or the File Meta Information (PS3.10 7.1) is
    missing, or when (0002,0000) FileMetaInformationGroupLength differs from the group's encoding.
    """
    if len(raw) < 144 or raw[128:132] != b"DICM":
        raise UnsafeDicom("no DICOM preamble")
    pos = 132
    group, elem = struct.unpack_from("<HH", raw, pos)
    if (group, elem) != (2, 0) or raw[pos + 4 : pos + 6] != b"UL":
        raise UnsafeDicom("file meta information without its group length")
    group_length = struct.unpack_from("<L", raw, pos + 8)[0]
    start = pos + 12
    end = start + group_length
    if end > len(raw):
        raise UnsafeDicom("file meta group length runs past the end of the file")
    syntax = ""
    pos = start
    while pos < end:
        group, elem = struct.unpack_from("<HH", raw, pos)
        if group != 2:
            raise UnsafeDicom("file meta group length does not match the group")
        vr = raw[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length, value = struct.unpack_from("<L", raw, pos + 8)[0], pos + 12
        else:
            length, value = struct.unpack_from("<H", raw, pos + 6)[0], pos + 8
        if value + length > end:
            raise UnsafeDicom("file meta group length does not match the group")
        if elem == 0x0010:
            syntax = raw[value : value + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value + length
    if end + 4 <= len(raw) and struct.unpack_from("<H", raw, end)[0] == 2:
        raise UnsafeDicom("file meta group length does not match the group")
    if not syntax:
        raise UnsafeDicom("file meta information without a transfer syntax")
    return syntax, end


def check_file(path: str | Path, limits: DicomLimits | None = None) -> None:
    """Check a Part 10 file (preamble, meta group length, data set limits) before pydicom reads it.

    Raises :class:`UnsafeDicom` (generic reason) or ``OSError``.
    """
    limits = limits or DicomLimits()
    path = Path(path)
    if path.stat().st_size > limits.max_bytes + _MiB:
        raise UnsafeDicom("file larger than the size limit")
    raw = path.read_bytes()
    try:
        syntax, offset = read_file_meta(raw)
    except struct.error:
        raise UnsafeDicom("file meta information is truncated") from None
    try:
        check_dataset_bytes(memoryview(raw)[offset:], syntax, limits)
    except struct.error:
        raise UnsafeDicom("data set is truncated") from None
