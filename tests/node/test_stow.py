"""DICOMweb STOW-RS export against Orthanc's DICOMweb plugin (Debian orthanc-dicomweb 1.7).

Delivered in one request per study; retried while Orthanc is down; basic auth (Orthanc's own) and
TLS with a CA file; an instance named in the response's FailedSOPSequence is retried alone.

Two things Debian's Orthanc 1.10.1 cannot do here, so a small relay (:class:`_Relay`) sits in front
of the real Orthanc for them: it cannot be made to fail one instance of a STOW request (a Lua
ReceivedInstanceFilter that refuses an instance is still reported stored), so the relay holds back
the PDF part of the first request and names it in FailedSOPSequence (0xA700), as a PACS that ran out
of space for it would; and its HTTPS server crashes (SIGSEGV) on the first TLS connection, so the
relay terminates TLS like the reverse proxy usually placed in front of Orthanc.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import threading
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from plugin.node.config import DicomWebAuth, DicomWebDestination, load_config
from plugin.node.stow import multipart_body, parse_response, stow
from plugin.viewer.orthanc import Orthanc, free_port
from tests.conftest import require_tool
from tests.node.conftest import FRONTAL, make_study, node_state, storescu, wait_for

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _modalities(orthanc: Orthanc, study_uid: str) -> list[str]:
    study_id = orthanc.study_id(study_uid)
    if study_id is None:
        return []
    return sorted(s["MainDicomTags"]["Modality"] for s in orthanc.series_of_study(study_id))


def _deliveries(node) -> dict[str, dict]:
    return {d["kind"]: d for d in node.queue.deliveries()}


@pytest.mark.network
def test_stow_is_retried_while_orthanc_is_down_then_delivered(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    require_tool("Orthanc")
    orthanc = Orthanc(tmp_path / "orthanc")  # its ports are chosen, nothing listens yet
    dest = DicomWebDestination(name="web", url=orthanc.dicomweb_url)
    node = running_node(node_config(destinations=(dest,), app={"beam_size": 1, "write_pdf": True}))
    study_uid, files = make_study(dicom_dir, tmp_path / "study", files=(FRONTAL,))
    assert storescu(node.cfg.port, files).returncode == 0

    def retried() -> bool:
        rows = node.queue.deliveries()
        return len(rows) == 2 and all(d["state"] == "pending" and d["attempts"] >= 2 for d in rows)

    wait_for(retried, 120, "two failed STOW attempts", explain=lambda: node_state(node))
    assert {d["last_error"] for d in node.queue.deliveries()} == {"no HTTP response (ConnectionRefusedError)"}
    with orthanc:
        wait_for(
            lambda: node.queue.delivery_counts()["delivered"] == 2, 60, "the delivery after Orthanc started"
        )
        assert _modalities(orthanc, study_uid) == ["DOC", "SR"]
    # the SR and the PDF went in the same request each time: equal attempt counts
    rows = _deliveries(node)
    assert rows["sr"]["attempts"] == rows["pdf"]["attempts"] >= 3


class _Relay:
    """HTTP(S) relay to Orthanc's HTTP port that records the SOP classes of each STOW request.

    ``fail_pdf_once``: the first request loses its PDF part, reported in FailedSOPSequence (0xA700).
    ``tls``: (certificate, key) files to serve HTTPS with.
    """

    def __init__(
        self, upstream_port: int, *, fail_pdf_once: bool = False, tls: tuple[Path, Path] | None = None
    ):
        self.upstream_port = upstream_port
        self.fail_pdf_once = fail_pdf_once
        self.requests: list[list[str]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                relay.handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*map(str, tls))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/dicom-web"

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        ctype = handler.headers["Content-Type"]
        message = BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        parts = [p.get_payload(decode=True) for p in message.get_payload()]
        datasets = [pydicom.dcmread(BytesIO(p), stop_before_pixels=True) for p in parts]
        self.requests.append([str(ds.SOPClassUID) for ds in datasets])
        held = (
            [ds for ds in datasets if ds.SOPClassUID == ENCAPSULATED_PDF] if len(self.requests) == 1 else []
        )
        kept = [p for p, ds in zip(parts, datasets, strict=True) if ds not in held]
        files = []
        for i, part in enumerate(kept):
            path = Path(f"/tmp/relay-{id(self)}-{i}.dcm")
            path.write_bytes(part)
            files.append(path)
        out, boundary = multipart_body(files)
        for path in files:
            path.unlink()
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            "Host": handler.headers["Host"],
        }
        if handler.headers["Authorization"]:
            headers["Authorization"] = handler.headers["Authorization"]
        conn.request("POST", handler.path, body=out, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        status = resp.status
        if status >= 300:
            handler.send_response(status)
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
            conn.close()
            return
        answer = json.loads(raw)
        conn.close()
        if held:
            failed = [
                {
                    "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
                    "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
                    "00081197": {"vr": "US", "Value": [0xA700]},
                }
                for ds in held
            ]
            answer["00081198"] = {"vr": "SQ", "Value": failed}
            status = 202
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/dicom+json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.network
def test_an_instance_in_failed_sop_sequence_is_retried_alone(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    require_tool("Orthanc")
    with Orthanc(tmp_path / "orthanc") as orthanc:
        relay = _Relay(orthanc.http_port, fail_pdf_once=True)
        try:
            dest = DicomWebDestination(name="web", url=relay.url)
            node = running_node(node_config(destinations=(dest,), app={"beam_size": 1, "write_pdf": True}))
            study_uid, files = make_study(dicom_dir, tmp_path / "study", files=(FRONTAL,))
            assert storescu(node.cfg.port, files).returncode == 0
            wait_for(lambda: node.queue.delivery_counts()["delivered"] == 2, 120, "both deliveries")
            assert _modalities(orthanc, study_uid) == ["DOC", "SR"]
            sr_class = "1.2.840.10008.5.1.4.1.1.88.22"
            assert relay.requests == [[sr_class, ENCAPSULATED_PDF], [ENCAPSULATED_PDF]]
            rows = _deliveries(node)
            assert rows["sr"]["attempts"] == 1 and rows["pdf"]["attempts"] == 2
            assert rows["pdf"]["last_error"] == "STOW FailedSOPSequence, FailureReason 0xA700"
        finally:
            relay.stop()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (it is its own CA) and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.network
def test_stow_over_tls_with_a_ca_file_and_basic_auth(tmp_path: Path, dicom_dir: Path) -> None:
    require_tool("Orthanc")
    cert, key = _self_signed(tmp_path)
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    _, files = make_study(dicom_dir, tmp_path / "study", files=(FRONTAL,))
    with Orthanc(tmp_path / "orthanc", users={"uar": "s3cret-pw"}) as orthanc:
        relay = _Relay(orthanc.http_port, tls=(cert, key))
        try:
            auth = DicomWebAuth(type="basic", username="uar", password_file=str(secret))
            good = DicomWebDestination(name="tls", url=relay.url, auth=auth, ca=str(cert))
            result = stow(good, files, 30)
            assert result.status == 200 and result.failed == {}
            assert result.stored == {str(pydicom.dcmread(files[0]).SOPInstanceUID)}
            assert orthanc.instance_count() == 1
            wrong = DicomWebAuth(type="basic", username="uar", password="wrong")
            assert (
                stow(DicomWebDestination(name="w", url=relay.url, auth=wrong, ca=str(cert)), files, 30).status
                == 401
            )
            untrusted = DicomWebDestination(name="u", url=relay.url, auth=auth)  # the system's CAs only
            result = stow(untrusted, files, 30)
            assert result.status is None and result.error == "SSLCertVerificationError"
            # plain http to Orthanc itself with its own basic auth
            direct = DicomWebDestination(name="d", url=orthanc.dicomweb_url, auth=auth)
            assert stow(direct, files, 30).status == 200
        finally:
            relay.stop()


def test_dicomweb_destination_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-123\n")
    path = tmp_path / "node.yaml"
    path.write_text(
        "destinations:\n"
        "  - {name: pacs, ae_title: ORTHANC, host: 127.0.0.1, port: 4242}\n"
        "  - {name: web, type: dicomweb, url: 'https://pacs.example.org/dicom-web/',\n"
        f"     auth: {{type: bearer, token_file: {tmp_path / 'token'}}}, ca: /etc/ca.pem}}\n"
    )
    cfg = load_config(path)
    web = cfg.destinations[1]
    assert (
        isinstance(web, DicomWebDestination) and web.stow_url == "https://pacs.example.org/dicom-web/studies"
    )
    assert web.auth is not None and web.auth.header() == "Bearer tok-123"
    assert "tok-123" not in repr(web)
    basic = DicomWebAuth(type="basic", username="a", password="b")
    assert basic.header() == "Basic YTpi"
    bad = [
        {"name": "x", "type": "dicomweb", "url": "ftp://h/x"},
        {"name": "x", "type": "dicomweb", "url": "https://u:p@h/x"},
        {
            "name": "x",
            "type": "dicomweb",
            "url": "http://pacs.example.org/x",
            "auth": {"type": "bearer", "token": "t"},
        },
        {"name": "x", "type": "dicomweb", "url": "http://h/x", "ca": "/ca.pem"},
        {"name": "x", "type": "dicomweb", "url": "https://h/x", "auth": {"type": "digest"}},
        {"name": "x", "type": "dicomweb", "url": "https://h/x", "auth": {"type": "basic", "username": "u"}},
        {"name": "x", "type": "smtp", "ae_title": "A", "host": "h", "port": 1},
    ]
    for entry in bad:
        with pytest.raises((ValueError, TypeError)):
            load_config(None, destinations=[entry])
    loopback = {"name": "x", "type": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web"}
    assert load_config(None, destinations=[loopback | {"auth": {"type": "bearer", "token": "t"}}])


def test_stow_response_parsing_and_connection_errors() -> None:
    body = json.dumps(
        {
            "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}}]},
            "00081198": {
                "vr": "SQ",
                "Value": [
                    {"00081155": {"vr": "UI", "Value": ["1.2.4"]}, "00081197": {"vr": "US", "Value": [272]}}
                ],
            },
        }
    ).encode()
    assert parse_response(body, "application/dicom+json") == ({"1.2.3"}, {"1.2.4": 272})
    xml = (
        b'<?xml version="1.0"?><NativeDicomModel><DicomAttribute tag="00081198" vr="SQ"><Item number="1">'
        b'<DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.5</Value></DicomAttribute>'
        b'<DicomAttribute tag="00081197" vr="US"><Value number="1">49152</Value></DicomAttribute>'
        b"</Item></DicomAttribute></NativeDicomModel>"
    )
    assert parse_response(xml, "application/dicom+xml") == (set(), {"1.2.5": 0xC000})
    assert parse_response(b"", "application/dicom+json") == (set(), {})
    with pytest.raises(ValueError):
        parse_response(b"<html>oops", "application/dicom+json")
    nobody = DicomWebDestination(name="n", url=f"http://127.0.0.1:{free_port()}/dicom-web")
    result = stow(nobody, [], 5)
    assert result.status is None and result.retry_all and result.error == "ConnectionRefusedError"
