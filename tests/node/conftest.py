"""Fixtures of the node tests: studies built from the real DICOM files, real peers on loopback.

Peers: dcmtk ``storescu`` (sender) and ``storescp`` (destination), a pynetdicom storage SCP that
records what it receives and can answer failure statuses, the node in-process (NodeService) or as
a separate ``python -m plugin.node run`` process (for kill -9).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
)

from plugin.node.config import Destination, NodeConfig, Source, write_config
from plugin.node.scp import echo
from plugin.node.service import NodeService
from tests.conftest import REPO, free_port, require_tool
from tests.helpers.tiny import make_tiny_checkpoint

FRONTAL = "dwv__gdcm-CR-MONO1-10-chest.dcm"  # CR, PA chest, Explicit VR LE, 440x440
LATERAL = "highdicom__dx_image.dcm"  # DX, lateral thorax, Explicit VR LE, 169x211
PATIENT_NAME = "Testpatient^Secretname"  # must never appear in a log
PATIENT_ID = "PID-SECRET-4711"
NODE_AE = "UARNODE"
SENDER_AE = "SENDER"


def wait_for(
    pred: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.1,
    explain: Callable[[], object] | None = None,
) -> object:
    """Poll ``pred`` until it returns a truthy value; fail the test after ``timeout`` seconds
    (with ``explain()`` in the message, e.g. the node's queue state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    detail = f": {explain()}" if explain is not None else ""
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}{detail}")


def node_state(node: NodeService) -> dict[str, object]:
    """Queue counts, deliveries, failure reasons and worker states of an in-process node."""
    return {
        "studies": node.queue.counts(),
        "deliveries": node.queue.delivery_counts(),
        "reasons": [s["reason"] for s in node.queue.studies() if s["reason"]][:5],
        "workers": [(s.proc is not None and s.proc.is_alive(), s.ready, s.job) for s in node.pool.slots],
        "busy_studies": sorted(node.scp.busy_studies()),
        "last_fatal": node.pool.last_fatal,
    }


def make_study(
    dicom_dir: Path, out_dir: Path, files: Sequence[str] = (FRONTAL, LATERAL), study_uid: str | None = None
) -> tuple[str, list[Path]]:
    """A two-view study from real files: new Study/Series/SOP Instance UIDs, a fake patient.

    Returns (StudyInstanceUID, written files).
    """
    study_uid = study_uid or generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(files):
        ds = pydicom.dcmread(dicom_dir / name)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.AccessionNumber = "ACC0001"
        path = out_dir / f"{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, paths


def storescu(
    port: int, files: Sequence[Path], aet: str = SENDER_AE, aec: str = NODE_AE, extra: Sequence[str] = ()
) -> subprocess.CompletedProcess:
    """Send ``files`` with dcmtk storescu in one association (proposing the files' own transfer syntaxes)."""
    cmd = [require_tool("storescu"), "-R", *extra, "-aet", aet, "-aec", aec, "127.0.0.1", str(port)]
    return subprocess.run([*cmd, *map(str, files)], capture_output=True, text=True, timeout=120)


class StoreSCP:
    """dcmtk ``storescp`` saving each received instance in ``out_dir`` (``<prefix>.<SOP UID>.dcm``)."""

    def __init__(self, out_dir: Path, ae_title: str = "DEST", port: int | None = None) -> None:
        self.out_dir = out_dir
        self.ae_title = ae_title
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        out_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> StoreSCP:
        cmd = [
            require_tool("storescp"),
            "-aet",
            self.ae_title,
            "-od",
            str(self.out_dir),
            "-fe",
            ".dcm",
            "+xa",
        ]
        self.proc = subprocess.Popen(
            [*cmd, str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: echo("127.0.0.1", self.port, self.ae_title) == 0, 20, "storescp to answer C-ECHO")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def files(self) -> list[Path]:
        return sorted(p for p in self.out_dir.iterdir() if p.suffix == ".dcm")

    def destination(self, name: str = "dest") -> Destination:
        return Destination(name=name, ae_title=self.ae_title, host="127.0.0.1", port=self.port)


class RecordingSCP:
    """pynetdicom storage SCP for SR / PDF (and ``extra_classes``) that records every C-STORE and
    answers ``statuses`` in turn.

    After the list is used up it answers Success. ``received`` holds the SOP Instance UIDs that were
    answered with Success, in order; ``attempts`` every request.
    """

    def __init__(
        self, ae_title: str = "RECORDER", statuses: Sequence[int] = (), extra_classes: Sequence[str] = ()
    ) -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.statuses = list(statuses)
        self.received: list[str] = []
        self.attempts: list[tuple[str, int]] = []
        self.datasets: list[pydicom.Dataset] = []
        self.associations = 0
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        classes = (EnhancedSRStorage, ComprehensiveSRStorage, BasicTextSRStorage, EncapsulatedPDFStorage)
        for sop in (*classes, *extra_classes):
            self.ae.add_supported_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server = None

    def _on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 0x0000
            self.attempts.append((str(ds.SOPInstanceUID), status))
            if status == 0:
                self.received.append(str(ds.SOPInstanceUID))
                self.datasets.append(ds)
        return status

    def _on_accepted(self, event: evt.Event) -> None:
        with self._lock:
            self.associations += 1

    def start(self) -> RecordingSCP:
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted)]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def destination(self, name: str = "recorder") -> Destination:
        return Destination(name=name, ae_title=self.ae_title, host="127.0.0.1", port=self.port)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint (fast to load and run) for the node's workers."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture
def node_config(tmp_path: Path, tiny_model: Path) -> Callable[..., NodeConfig]:
    """Factory of node configs for tests: loopback, free port, short timers, the tiny model."""

    def make(**overrides: object) -> NodeConfig:
        cfg = NodeConfig(
            ae_title=NODE_AE,
            bind="127.0.0.1",
            port=free_port(),
            sources=(Source(SENDER_AE), Source("ORTHANC")),
            storage_dir=str(tmp_path / "node"),
            min_free_mb=0,
            idle_timeout_s=0.7,
            workers=1,
            study_timeout_s=120.0,
            max_attempts=2,
            retry_delay_s=0.2,
            model_path=str(tiny_model),
            app={"beam_size": 1},
            export_backoff_s=0.2,
            export_backoff_max_s=1.0,
            export_timeout_s=5.0,
            shutdown_grace_s=5.0,
            log_format="json",
        )
        return replace(cfg, **overrides)

    return make


@pytest.fixture
def running_node() -> Iterator[Callable[[NodeConfig], NodeService]]:
    """Start NodeService instances in this process; all are stopped at teardown."""
    started: list[NodeService] = []

    def start(cfg: NodeConfig) -> NodeService:
        svc = NodeService(cfg)
        svc.start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


class NodeProcess:
    """The node as a separate ``python -m plugin.node run`` process (logs to ``log_path``)."""

    def __init__(self, cfg: NodeConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.config_path = write_config(cfg, workdir / "node.yaml")
        self.log_path = workdir / "node.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> NodeProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plugin.node", "run", "--config", str(self.config_path)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: echo("127.0.0.1", self.cfg.port, self.cfg.ae_title, SENDER_AE) == 0 or self.proc.poll(),
            timeout,
            "the node process to answer C-ECHO",
        )
        assert self.proc.poll() is None, self.log_path.read_text()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
