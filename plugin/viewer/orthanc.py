"""A temporary Orthanc (Debian ``orthanc``, ``orthanc-dicomweb``) on loopback, for the viewer and tests.

:class:`Orthanc` writes a configuration into its own folder (storage, index, log), binds HTTP and
DICOM to 127.0.0.1 on the given (usually random free) ports, loads the DICOMweb plugin
(``/dicom-web/`` QIDO-RS / WADO-RS / STOW-RS and ``/wado`` WADO-URI), registers the given DICOM
modalities and accepts C-STORE only from them. Its REST API is used to upload instances, to route a
study to a modality (the node) and to look at what came back.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin.viewer.assets import dicomweb_plugin, find_tool


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Modality:
    """A DICOM peer Orthanc may send to and accept C-STORE from (``DicomModalities`` entry)."""

    name: str
    ae_title: str
    port: int
    host: str = "127.0.0.1"


@dataclass
class Orthanc:
    """One Orthanc process; :meth:`start` / :meth:`stop`, or use it as a context manager."""

    folder: Path
    modalities: tuple[Modality, ...] = ()
    ae_title: str = "ORTHANC"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    stable_age_s: int = 60
    lua_scripts: tuple[Path, ...] = ()
    users: dict[str, str] | None = None  # HTTP basic authentication (RegisteredUsers); None = off
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL of the REST API (``http://127.0.0.1:<http_port>``)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root (QIDO-RS, WADO-RS, STOW-RS), without a trailing slash."""
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        """The Orthanc configuration written to ``folder/orthanc.json``."""
        return {
            "Name": "uar-viewer-stack",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "HttpBindAddress": "127.0.0.1",
            "DicomPort": self.dicom_port,
            "DicomBindAddress": "127.0.0.1",
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": self.users is not None,
            "RegisteredUsers": self.users or {},
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "StableAge": self.stable_age_s,
            "DicomModalities": {
                m.name: {
                    "AET": m.ae_title,
                    "Host": m.host,
                    "Port": m.port,
                    "AllowStore": True,
                    "AllowEcho": True,
                    "AllowFind": False,
                    "AllowMove": False,
                }
                for m in self.modalities
            },
            "LuaScripts": [str(p) for p in self.lua_scripts],
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado"},
        }

    def start(self, timeout_s: float = 30.0) -> Orthanc:
        """Write the configuration, start Orthanc and wait until its REST API answers."""
        binary = find_tool("Orthanc", package="orthanc")
        self.folder.mkdir(parents=True, exist_ok=True)
        config_path = self.folder / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=1), encoding="utf-8")
        with (self.folder / "orthanc.log").open("ab") as log:
            self.proc = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not self.alive():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.proc.returncode}; see {self.folder}/orthanc.log"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"Orthanc did not answer within {timeout_s:g} s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Terminate Orthanc (its data stays in ``folder``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        """True if the REST API answers ``GET /system``."""
        try:
            return bool(self.rest("GET", "/system", timeout_s=2.0))
        except (OSError, ValueError):
            return False

    def rest(self, method: str, path: str, body: bytes | None = None, *, timeout_s: float = 60.0) -> Any:
        """One REST call; returns the decoded JSON answer (``None`` when empty)."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"null")

    def upload(self, path: Path) -> dict[str, Any]:
        """``POST /instances`` one DICOM file; returns Orthanc's answer (``ID``, ``ParentStudy``, ...)."""
        return self.rest("POST", "/instances", path.read_bytes())

    def send_to_modality(self, modality: str, resources: list[str]) -> dict[str, Any]:
        """C-STORE ``resources`` (Orthanc ids) to ``modality`` synchronously; returns the job's answer."""
        job = json.dumps({"Resources": resources, "Synchronous": True}).encode()
        return self.rest("POST", f"/modalities/{modality}/store", job, timeout_s=300.0)

    def series_of_study(self, study_id: str) -> list[dict[str, Any]]:
        """The series of an Orthanc study (``MainDicomTags``, ``Instances``, ...)."""
        return self.rest("GET", f"/studies/{study_id}/series")

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc id of the study with this StudyInstanceUID, or None."""
        body = json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}).encode()
        found = self.rest("POST", "/tools/find", body)
        return found[0] if found else None

    def instance_count(self) -> int:
        """Number of instances stored."""
        try:
            return int(self.rest("GET", "/statistics")["CountInstances"])
        except urllib.error.URLError:
            return -1
