"""Issue 17 defects that the fuzz suite does not isolate: shutdown on a full disk, scheduler error
rate, workers outliving a killed node, and the pre-association guard's own limits."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from plugin.node import guard
from plugin.node.config import NodeConfig, TLSConfig
from plugin.node.scp import echo
from plugin.node.service import NodeService
from tests.conftest import require_tool
from tests.node.conftest import NODE_AE, SENDER_AE, NodeProcess, wait_for


def _disk_full(*args: object, **kwargs: object) -> None:
    raise sqlite3.OperationalError("database or disk is full")


def test_stop_runs_every_step_when_the_disk_is_full(
    node_config: Callable[..., NodeConfig], caplog: pytest.LogCaptureFixture
) -> None:
    node = NodeService(node_config(workers=0, metrics_port=0))
    node.start()
    node.queue.requeue = _disk_full  # type: ignore[method-assign]
    node.queue.close = _disk_full  # type: ignore[method-assign]
    node.pool.stop = lambda grace: ([], [object()])  # type: ignore[method-assign,list-item]
    caplog.set_level(logging.INFO, logger="plugin.node")
    node.stop()  # must not raise
    events = [getattr(r, "event", "") for r in caplog.records]
    assert events.count("shutdown_step_failed") == 2
    assert events[-1] == "node_stopped"
    with pytest.raises(OSError):
        os.fstat(node._lock_fd)  # the lock step after the failures still ran


def test_scheduler_errors_are_rate_limited(
    node_config: Callable[..., NodeConfig], caplog: pytest.LogCaptureFixture
) -> None:
    node = NodeService(node_config(workers=0))
    node.tick = _disk_full  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="plugin.node")
    node.start()
    time.sleep(1.5)  # ~15 failing ticks
    node.tick = lambda: None  # type: ignore[method-assign]
    node.stop()
    errors = [r for r in caplog.records if getattr(r, "event", "") == "scheduler_error"]
    assert len(errors) == 1
    assert "disk is full" not in errors[0].getMessage()  # type name only


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.update(int(c) for c in text)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_workers_end_with_a_killed_node(node_config: Callable[..., NodeConfig], tmp_path: Path) -> None:
    node = NodeProcess(node_config(workers=2), tmp_path).start()
    assert node.proc is not None
    # killed while the workers load the model: they read nothing from the node then, so only
    # their own watch on the parent can end them
    workers = wait_for(
        lambda: _children(node.proc.pid) if len(_children(node.proc.pid)) >= 2 else None, 60, "workers"
    )
    assert "worker_ready" not in node.log()
    time.sleep(1.0)
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)
    wait_for(lambda: not any(_alive(p) for p in workers), 3, "the workers to end after kill -9 of the node")


def test_guard_limits(node_config: Callable[..., NodeConfig], running_node: Callable) -> None:
    cfg = node_config(workers=0, max_associations=2, max_pending_per_peer=3, first_pdu_timeout_s=1.0)
    node = running_node(cfg)
    port = cfg.port
    # idle connections from one peer: the fourth is closed at once, C-ECHO from another still works
    held = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        held.append(s)
    extra = socket.socket()
    extra.bind(("127.0.0.2", 0))
    extra.connect(("127.0.0.1", port))
    extra.settimeout(2)
    assert extra.recv(1) == b""  # closed by the node
    assert echo("127.0.0.1", port, NODE_AE, SENDER_AE) == 0
    # held idle sockets are closed after first_pdu_timeout_s
    for s in held:
        s.settimeout(3)
        assert s.recv(1) == b""
    # an A-ASSOCIATE-RQ longer than the limit is not read
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(bytes([1, 0]) + struct.pack(">L", 0xFFFFFFF0))
        s.settimeout(2)
        assert s.recv(1) == b""
    # a first PDU that is not an A-ASSOCIATE-RQ closes the connection
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(bytes([4, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
        s.settimeout(2)
        assert s.recv(1) == b""
    # and none of it locked out a legitimate association
    assert echo("127.0.0.1", port, NODE_AE, SENDER_AE) == 0
    assert node.scp.server is not None and node.scp.server.pending() == 0
    # every refusal is counted by reason (uar_node_connections_refused_total)
    counted = "uar_node_connections_refused_total"
    assert node.metrics.value(counted, reason="too many pending connections from one peer") == 1
    assert node.metrics.value(counted, reason="no association request (timeout or closed)") >= 3
    assert node.metrics.value(counted, reason="A-ASSOCIATE-RQ longer than the limit") == 1
    assert node.metrics.value(counted, reason="first PDU is not an A-ASSOCIATE-RQ") == 1


def test_empty_connections_do_not_each_cost_a_full_garbage_collection(
    node_config: Callable[..., NodeConfig], running_node: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pynetdicom ran gc.collect() every 60 connections: ~0.25 s each in a process holding the app's
    # imports, so 60 empty connections a second kept a core busy (benchmarks/node_soak.py)
    collections: list[float] = []
    monkeypatch.setattr(guard.gc, "collect", lambda *a: collections.append(time.monotonic()) or 0)
    monkeypatch.setattr(guard, "FULL_GC_EVERY_S", 3600.0)  # none is due during the test
    cfg = node_config(workers=0)
    running_node(cfg)
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", cfg.port)):
            pass
    assert echo("127.0.0.1", cfg.port, NODE_AE, SENDER_AE) == 0
    assert collections == []  # pynetdicom's own loop would have collected 5 times


def test_a_stalled_tls_handshake_does_not_block_other_peers(
    tmp_path: Path, node_config: Callable[..., NodeConfig], running_node: Callable
) -> None:
    """pynetdicom did the TLS handshake in the accepting thread: one silent socket blocked everyone."""
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tls = TLSConfig(cert=str(cert), key=str(key), ca=str(cert))
    cfg = node_config(workers=0, tls=tls, first_pdu_timeout_s=3.0)
    running_node(cfg)
    silent = [socket.create_connection(("127.0.0.1", cfg.port)) for _ in range(3)]  # no ClientHello
    ae = AE(ae_title=SENDER_AE)
    ae.add_requested_context(Verification, ImplicitVRLittleEndian)
    ae.acse_timeout = ae.network_timeout = 5
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", cfg.port, ae_title=NODE_AE, tls_args=(tls.client_context(), None))
    assert assoc.is_established and time.monotonic() - t0 < 2.5
    assoc.release()
    for s in silent:  # the silent ones are closed after first_pdu_timeout_s
        s.settimeout(5)
        assert s.recv(1) == b""
        s.close()
