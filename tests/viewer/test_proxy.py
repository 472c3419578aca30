"""The viewer's same-origin server: static OHIF files, our app-config.js, DICOMweb forwarded with Host."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from plugin.viewer.proxy import ViewerServer, app_config_js


class _Upstream(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "host": self.headers["Host"], "accept": self.headers["Accept"]})
        body = b'{"BulkDataURI": "http://' + self.headers["Host"].encode() + b'/dicom-web/x"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>ohif</html>")
    (dist / "app.bundle.js").write_text("console.log(1)")
    (dist / "codec.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("outside dist")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    srv = ViewerServer(dist, upstream.server_address[1]).start()
    yield srv
    srv.stop()
    upstream.shutdown()
    upstream.server_close()


def _get(srv: ViewerServer, path: str, method: str = "GET", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_static_files_routes_and_config(server: ViewerServer) -> None:
    resp, body = _get(server, "/app.bundle.js")
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/javascript"
    assert _get(server, "/codec.wasm")[0].getheader("Content-Type") == "application/wasm"
    resp, body = _get(server, "/viewer?StudyInstanceUIDs=1.2.3")  # a client-side route: index.html
    assert resp.status == 200 and body == b"<html>ohif</html>"
    assert _get(server, "/missing.js")[0].status == 404
    assert _get(server, "/../secret.txt")[0].status in (400, 404)
    assert _get(server, "/%2e%2e/secret.txt")[1] != b"outside dist"
    resp, body = _get(server, "/app-config.js")
    assert body.decode() == app_config_js()
    assert "investigationalUseDialog" in body.decode() and '"ohif.tours"' in body.decode()
    assert '"qidoRoot": "/dicom-web"' in body.decode() and "https://" not in body.decode()


def test_dicomweb_is_forwarded_with_the_browsers_host(server: ViewerServer) -> None:
    _Upstream.seen.clear()
    host = f"127.0.0.1:{server.port}"
    resp, body = _get(
        server, "/dicom-web/studies?00100020=x", headers={"Host": host, "Accept": "application/dicom+json"}
    )
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/dicom+json"
    assert _Upstream.seen == [
        {"path": "/dicom-web/studies?00100020=x", "host": host, "accept": "application/dicom+json"}
    ]
    assert f"http://{host}/dicom-web/x".encode() in body  # bulk data stays on the viewer's origin
    _get(server, "/wado?requestType=WADO")
    assert _Upstream.seen[-1]["path"] == "/wado?requestType=WADO"


def test_the_viewer_is_read_only(server: ViewerServer) -> None:
    assert _get(server, "/dicom-web/studies", method="POST")[0].status == 501
    assert _get(server, "/dicom-web/studies/1", method="DELETE")[0].status == 501
