"""DICOMweb STOW-RS client (PS3.18 10.5): one ``multipart/related`` POST per study, the response parsed.

:func:`stow` sends the Part 10 files of one study to ``{url}/studies`` with ``Accept:
application/dicom+json`` and returns a :class:`StowResult`: the HTTP status (None when no answer
came: refused or reset connection, TLS failure, timeout) and, from the response's Store Instances
Response Module, the SOP Instance UIDs stored (ReferencedSOPSequence (0008,1199)) and failed
(FailedSOPSequence (0008,1198), with FailureReason (0008,1197)). A PS3.19 native XML response is
read too. Only the standard library is used (``http.client``, ``ssl``).
"""

from __future__ import annotations

import http.client
import json
import secrets
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uar
from plugin.node.config import DicomWebDestination

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a STOW response for a handful of instances is a few KB
RETRY_HTTP_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass
class StowResult:
    """Outcome of one STOW-RS request."""

    status: int | None  # HTTP status; None = no response (connection error, TLS failure, timeout)
    stored: set[str] = field(default_factory=set)  # ReferencedSOPInstanceUIDs of ReferencedSOPSequence
    failed: dict[str, int | None] = field(default_factory=dict)  # UID -> FailureReason of FailedSOPSequence
    error: str | None = None  # why there was no usable answer (exception name, unreadable body)

    @property
    def retry_all(self) -> bool:
        """No answer, or a status that asks to try again later (408, 429, 5xx)."""
        return self.status is None or self.status in RETRY_HTTP_STATUSES


def multipart_body(files: Sequence[Path]) -> tuple[bytes, str]:
    """``multipart/related; type="application/dicom"`` body of ``files`` and its boundary."""
    boundary = f"uar-{secrets.token_hex(16)}"
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"))
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts), boundary


def _json_uids(items: object) -> list[tuple[str, int | None]]:
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        uid = (item.get(REFERENCED_SOP_INSTANCE_UID) or {}).get("Value") or [None]
        reason = (item.get(FAILURE_REASON) or {}).get("Value") or [None]
        if isinstance(uid[0], str):
            out.append((uid[0], reason[0] if isinstance(reason[0], int) else None))
    return out


def parse_response(body: bytes, content_type: str) -> tuple[set[str], dict[str, int | None]]:
    """(stored UIDs, failed UID -> FailureReason) of a STOW-RS response body (DICOM JSON or native XML).

    An empty body gives two empty collections; an unreadable one raises ``ValueError``.
    """
    if not body.strip():
        return set(), {}
    if "xml" in content_type.lower():
        return _parse_xml(body)
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable STOW response ({type(exc).__name__})") from None
    if isinstance(doc, list):  # some servers wrap the response data set in an array
        doc = doc[0] if doc else {}
    if not isinstance(doc, dict):
        raise ValueError("unreadable STOW response (not a DICOM JSON object)")
    stored = {uid for uid, _ in _json_uids((doc.get(REFERENCED_SOP_SEQUENCE) or {}).get("Value"))}
    failed = dict(_json_uids((doc.get(FAILED_SOP_SEQUENCE) or {}).get("Value")))
    return stored - set(failed), failed


def _parse_xml(body: bytes) -> tuple[set[str], dict[str, int | None]]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise ValueError("unreadable STOW response (XML)") from None

    def items(tag: str) -> list[tuple[str, int | None]]:
        out = []
        for seq in root.iter("DicomAttribute"):
            if seq.get("tag") != tag:
                continue
            for item in seq.findall("Item"):
                values = {a.get("tag"): a.findtext("Value") for a in item.findall("DicomAttribute")}
                uid, reason = values.get(REFERENCED_SOP_INSTANCE_UID), values.get(FAILURE_REASON)
                if uid:
                    out.append((uid.strip(), int(reason) if reason and reason.strip().isdigit() else None))
        return out

    failed = dict(items(FAILED_SOP_SEQUENCE))
    return {uid for uid, _ in items(REFERENCED_SOP_SEQUENCE)} - set(failed), failed


def stow(dest: DicomWebDestination, files: Sequence[Path], timeout_s: float) -> StowResult:
    """POST ``files`` (one study) to ``dest`` in one request; never raises for network or server errors."""
    body, boundary = multipart_body(files)
    parts = urlsplit(dest.stow_url)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        "Content-Length": str(len(body)),
        "User-Agent": f"uar-report-node/{uar.__version__}",
    }
    try:
        if dest.auth is not None:
            headers["Authorization"] = dest.auth.header()
    except OSError as exc:
        return StowResult(None, error=f"cannot read the credentials ({type(exc).__name__})")
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout_s, context=dest.ssl_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("POST", parts.path or "/studies", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(MAX_RESPONSE_BYTES + 1)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return StowResult(None, error=type(exc).__name__)
    finally:
        conn.close()
    if len(data) > MAX_RESPONSE_BYTES:
        return StowResult(resp.status, error="STOW response too large")
    try:
        stored, failed = parse_response(data, resp.getheader("Content-Type") or "")
    except ValueError as exc:
        return StowResult(resp.status, error=str(exc))
    return StowResult(resp.status, stored, failed)
