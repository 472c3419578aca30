"""The node (a real ``python -m plugin.node run`` process) against hostile peers on loopback.

Over 1000 mutated instances are sent by a pynetdicom peer, raw (the mutated bytes exactly, in the
transfer syntax of the mutation), interleaved with hostile connections: empty, idle, junk,
oversized association requests and PDUs, decompression and sequence bombs, data sets over the
limit. Invariants: the node answers C-ECHO throughout; every C-STORE gets a status; a single
hostile connection grows the node by less than 64 MiB; no file appears outside the storage
folder; no received value (canary strings) reaches the log, node.db, ``uar node status`` or any
non-DICOM file.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE

from plugin.node.config import NodeConfig, Source
from plugin.node.scp import STORAGE_CLASSES, echo
from tests.conftest import REPO, free_port
from tests.fuzz.conftest import SEED, leaks
from tests.fuzz.mutations import Mutant, Mutator, deflate_bomb, sequence_bomb
from tests.node.conftest import NodeProcess, wait_for

# the mutations trip pydicom's validation warnings on the peer's side (not the node's log)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NODE_AE, PEER_AE = "UARNODE", "FUZZER"
N_MUTANTS = 1050
PER_ASSOCIATION = 35
MAX_GROWTH_MIB = 64
SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
)


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakRSS:
    """Samples the RSS of ``pid`` every 10 ms while active; ``growth`` is peak minus start (MiB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_mib(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.start


class RawPeer:
    """A storage SCU that sends mutated data sets byte for byte, in the mutation's transfer syntax."""

    def __init__(self, port: int) -> None:
        self.ae = AE(PEER_AE)
        self.ae.dimse_timeout = self.ae.acse_timeout = self.ae.network_timeout = 30
        for sop_class in STORAGE_CLASSES:
            for syntax in SYNTAXES:
                self.ae.add_requested_context(sop_class, [syntax])
        self.port = port
        self.assoc = None
        self.msg_id = 0

    def __enter__(self) -> RawPeer:
        self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title=NODE_AE)
        assert self.assoc.is_established
        return self

    def __exit__(self, *exc: object) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()

    def context_id(self, sop_class: str, syntax: str) -> int:
        classes = {str(c) for c in STORAGE_CLASSES}
        want = sop_class if sop_class in classes else str(STORAGE_CLASSES[0])
        for cx in self.assoc.accepted_contexts:
            if cx.abstract_syntax == want and cx.transfer_syntax[0] == syntax:
                return int(cx.context_id)
        for cx in self.assoc.accepted_contexts:
            if cx.abstract_syntax == want and cx.transfer_syntax[0] == ExplicitVRLittleEndian:
                return int(cx.context_id)
        raise AssertionError("no context")

    def send(self, m: Mutant) -> int | None:
        """Send one C-STORE-RQ; the response status, or None if none came."""
        assert self.assoc is not None
        self.msg_id = self.msg_id % 65535 + 1
        req = C_STORE()
        req.MessageID = self.msg_id
        req.Priority = 2
        try:
            req.AffectedSOPClassUID = m.sop_class
            req.AffectedSOPInstanceUID = m.sop_uid
        except (TypeError, ValueError):
            req.AffectedSOPInstanceUID = "1.2.3.4"
        req.DataSet = BytesIO(m.dataset_bytes)
        cx = self.context_id(m.sop_class, m.transfer_syntax)
        self.assoc._reactor_checkpoint.clear()
        while not self.assoc._is_paused:
            time.sleep(0.0001)
        try:
            self.assoc.dimse.send_msg(req, cx)
            _, rsp = self.assoc.dimse.get_msg(block=True)
        finally:
            self.assoc._reactor_checkpoint.set()
        return None if rsp is None else int(rsp.Status)


@pytest.fixture
def mutator(dicom_dir: Path) -> Mutator:
    """Mutations mostly of the smallest real file (the node checks structure, not anatomy)."""
    return Mutator(dicom_dir, SEED, weights=(8, 1, 1))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    cfg = NodeConfig(
        ae_title=NODE_AE,
        bind="127.0.0.1",
        port=free_port(),
        sources=(Source(PEER_AE), Source("SENDER")),
        storage_dir=str(tmp_path / "storage"),
        min_free_mb=0,
        workers=0,
        idle_timeout_s=0.5,
        max_associations=4,
        first_pdu_timeout_s=2.0,
        max_dataset_mb=16,
        log_format="json",
        metrics_port=free_port(),
    )
    (tmp_path / "run").mkdir()
    proc = NodeProcess(cfg, tmp_path / "run").start()
    yield proc
    assert proc.terminate() == 0, proc.log()[-3000:]


def echo_ok(node: NodeProcess, source: str = "127.0.0.1") -> bool:
    return echo("127.0.0.1", node.cfg.port, NODE_AE, PEER_AE, timeout_s=5) == 0


def hostile(node: NodeProcess, name: str, attack: Callable[[], object]) -> float:
    """Run one hostile connection, check the node's growth and that it still answers C-ECHO."""
    assert node.proc is not None
    with PeakRSS(node.proc.pid) as rss:
        attack()
    assert rss.growth < MAX_GROWTH_MIB, f"{name}: node grew {rss.growth:.0f} MiB"
    assert wait_for(lambda: echo_ok(node), 5, f"C-ECHO after {name}")
    return rss.growth


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def associate_rq(port: int) -> socket.socket:
    """An established association (raw socket) from pynetdicom's own A-ASSOCIATE-RQ bytes."""
    ae = AE(PEER_AE)
    ae.add_requested_context(STORAGE_CLASSES[0], [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    return assoc


def attacks(node: NodeProcess, mutator: Mutator) -> dict[str, Callable[[], object]]:
    port = node.cfg.port
    rng = random.Random(3)

    def empty() -> None:
        for _ in range(node.cfg.max_associations * 3):
            connect(port).close()
        assert echo_ok(node), "C-ECHO right after empty connections"

    def idle() -> None:
        held = [connect(port, "127.0.0.2") for _ in range(100)]
        try:
            assert echo_ok(node), "C-ECHO while 100 idle sockets are held"
        finally:
            for s in held:
                s.close()
        assert echo_ok(node), "C-ECHO right after the idle sockets"

    def junk() -> None:
        for _ in range(100):
            with connect(port, "127.0.0.3") as s:
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))

    def huge_rq() -> None:
        with connect(port) as s:
            s.sendall(bytes([1, 0]) + struct.pack(">L", 0xFFFFFFF0))
            try:
                for _ in range(32):
                    s.sendall(b"\x00" * 2**20)
            except OSError:
                pass

    def huge_pdata() -> None:
        assoc = associate_rq(port)
        sock = assoc.dul.socket.socket
        try:
            sock.sendall(bytes([4, 0]) + struct.pack(">L", 0x40000000))
            for _ in range(16):
                sock.sendall(b"\x00" * 2**20)
        except OSError:
            pass
        assoc.abort()

    def over_limit() -> None:
        big = mutator.mutant("valid")
        big.dataset_bytes = big.dataset_bytes + struct.pack("<HH2sHL", 0x0009, 0x1000, b"OB", 0, 24 * 2**20)
        big.dataset_bytes += b"\x00" * (24 * 2**20)
        with RawPeer(port) as peer, contextlib.suppress(Exception):
            peer.send(big)

    def bombs() -> None:
        with RawPeer(port) as peer:
            assert peer.send(deflate_bomb(mutator, 128)) not in (None, 0)
            assert peer.send(sequence_bomb(mutator, 150_000)) not in (None, 0)

    def blank_uids() -> None:
        with RawPeer(port) as peer:
            for uid in ("", " ", "\\"):
                m = mutator.mutant("valid")
                m.sop_uid = uid
                assert peer.send(m) == 0xA900

    return {
        "empty connections": empty,
        "idle sockets": idle,
        "junk connections": junk,
        "huge A-ASSOCIATE-RQ": huge_rq,
        "huge P-DATA": huge_pdata,
        "data set over the limit": over_limit,
        "deflate and sequence bombs": bombs,
        "blank Affected SOP Instance UIDs": blank_uids,
    }


@pytest.mark.slow
def test_node_holds_against_hostile_peers(node: NodeProcess, mutator: Mutator, tmp_path: Path) -> None:
    hostile_runs = attacks(node, mutator)
    names = list(hostile_runs)
    statuses: Counter[str] = Counter()
    unanswered: list[str] = []
    growth: dict[str, float] = {}
    sent = 0
    batch = 0
    while sent < N_MUTANTS:
        with RawPeer(node.cfg.port) as peer:
            for _ in range(PER_ASSOCIATION):
                m = mutator.mutant()
                status = peer.send(m)
                sent += 1
                if status is None:
                    unanswered.append(m.kind)
                    break
                statuses[f"{m.kind}:0x{status:04X}"] += 1
        assert echo_ok(node), f"C-ECHO after batch {batch}"
        name = names[batch % len(names)]
        growth[name] = max(growth.get(name, 0.0), hostile(node, name, hostile_runs[name]))
        batch += 1
    assert unanswered == [], unanswered
    assert sent >= 1000
    # what the guard refused is counted where the PACS administrator looks (Prometheus), by our reasons
    url = f"http://127.0.0.1:{node.cfg.metrics_port}/metrics"
    metrics = urllib.request.urlopen(url, timeout=10).read().decode()
    refused = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("uar_node_connections_refused_total{")
    }
    assert refused.get('reason="no association request (timeout or closed)"', 0) > 0, refused
    assert refused.get('reason="first PDU is not an A-ASSOCIATE-RQ"', 0) > 0, refused
    blank = [line for line in metrics.splitlines() if 'instances_refused_total{status="0xA900"}' in line]
    assert blank and float(blank[0].rsplit(" ", 1)[1]) >= 3, blank
    assert leaks(metrics) == []
    assert any(k.startswith("valid:0x0000") for k in statuses), statuses
    summary = {"statuses": dict(sorted(statuses.items())), "growth_mib": growth}
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))

    storage = Path(node.cfg.storage_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "storage"]
    for path in storage.rglob("*"):
        if path.is_file() and path.suffix != ".dcm":
            assert leaks(path.read_bytes().decode("latin-1")) == [], path
        elif path.is_file():
            assert path.parent.parent.name in ("incoming", "failed"), path
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    status = subprocess.run(
        [sys.executable, "-m", "plugin.node", "status", "--storage", str(storage)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert status.returncode == 0 and leaks(status.stdout + status.stderr) == []
    log = node.log()
    assert leaks(log) == [], [line for line in log.splitlines() if leaks(line)][:5]
    bad_lines = [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
    assert bad_lines == [], bad_lines[:5]  # every line is one of our JSON events (no raw library text)
