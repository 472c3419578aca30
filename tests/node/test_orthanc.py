"""Orthanc as the PACS: a study uploaded over REST is routed to the node with
``POST /modalities/{id}/store``; the SR comes back into the same Orthanc study."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from plugin.node.config import Destination
from tests.conftest import free_port, require_tool
from tests.node.conftest import NODE_AE, make_study, wait_for


def _http(port: int, method: str, path: str, body: bytes | None = None) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def _alive(port: int) -> bool:
    try:
        return bool(_http(port, "GET", "/system"))
    except OSError:
        return False


@pytest.mark.network
def test_orthanc_routes_a_study_and_gets_the_sr_back_in_the_same_study(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    http_port, dicom_port = free_port(), free_port()
    cfg = node_config(
        destinations=(Destination(name="orthanc", ae_title="ORTHANC", host="127.0.0.1", port=dicom_port),)
    )
    orthanc_cfg = {
        "Name": "uar-node-test",
        "StorageDirectory": str(tmp_path / "orthanc" / "storage"),
        "IndexDirectory": str(tmp_path / "orthanc" / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {
            "uarnode": {
                "AET": NODE_AE,
                "Host": "127.0.0.1",
                "Port": cfg.port,
                "AllowStore": True,
                "AllowEcho": True,
                "AllowFind": False,
                "AllowMove": False,
            }
        },
        "Plugins": [],
    }
    (tmp_path / "orthanc").mkdir()
    config_path = tmp_path / "orthanc" / "orthanc.json"
    config_path.write_text(json.dumps(orthanc_cfg))
    log = (tmp_path / "orthanc" / "orthanc.log").open("wb")
    orthanc = subprocess.Popen(
        [require_tool("Orthanc"), str(config_path)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: _alive(http_port), 30, "Orthanc's REST API")
        running_node(cfg)
        assert _http(http_port, "POST", "/modalities/uarnode/echo", b"{}") == {}
        study_uid, files = make_study(dicom_dir, tmp_path / "study")
        uploaded = [_http(http_port, "POST", "/instances", f.read_bytes()) for f in files]
        study_id = uploaded[0]["ParentStudy"]
        assert {u["ParentStudy"] for u in uploaded} == {study_id}
        job = json.dumps({"Resources": [study_id], "Synchronous": True}).encode()
        routed = _http(http_port, "POST", "/modalities/uarnode/store", job)
        assert routed["InstancesCount"] == 2 and routed["FailedInstancesCount"] == 0

        def sr_series() -> list[dict[str, Any]]:
            series = _http(http_port, "GET", f"/studies/{study_id}/series")
            return [s for s in series if s["MainDicomTags"].get("Modality") == "SR"]

        [sr] = wait_for(sr_series, 120, "the SR series in Orthanc's study")
        assert len(sr["Instances"]) == 1
        tags = _http(http_port, "GET", f"/instances/{sr['Instances'][0]}/simplified-tags")
        assert tags["StudyInstanceUID"] == study_uid
        assert len(_http(http_port, "GET", f"/studies/{study_id}/instances")) == 3
    finally:
        orthanc.terminate()
        orthanc.wait(30)
        log.close()
