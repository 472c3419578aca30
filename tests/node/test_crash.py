"""Crash safety: kill -9 after the instances were acknowledged, restart, SR delivered exactly once."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from plugin.node.cli import status_report
from plugin.node.queue import JobQueue
from tests.node.conftest import (
    PATIENT_ID,
    PATIENT_NAME,
    NodeProcess,
    RecordingSCP,
    make_study,
    storescu,
    wait_for,
)


@pytest.mark.network
@pytest.mark.slow
def test_kill9_after_ack_then_restart_delivers_exactly_once(
    dicom_dir: Path, tmp_path: Path, node_config
) -> None:
    rec = RecordingSCP().start()
    try:
        # a long idle timeout: the instances are acknowledged but not processed when we kill the node
        cfg = node_config(destinations=(rec.destination(),), idle_timeout_s=600.0, log_format="kv")
        node = NodeProcess(cfg, tmp_path).start()
        study_uid, files = make_study(dicom_dir, tmp_path / "study")
        sent = storescu(cfg.port, files)
        assert sent.returncode == 0, sent.stderr
        node.kill9()
        db = JobQueue(Path(cfg.storage_dir) / "node.db")
        assert db.counts()["receiving"] == 1 and db.studies()[0]["n_instances"] == 2
        db.close()
        # restart with a short idle timeout: the study is recovered, processed and exported once
        node = NodeProcess(replace(cfg, idle_timeout_s=0.5), tmp_path).start()
        wait_for(lambda: rec.received, 120, "the SR after the restart")
        sr_uid = rec.received[0]
        assert rec.datasets[0].StudyInstanceUID == study_uid
        # a graceful stop and another restart must not send it again
        assert node.terminate() == 0
        node = NodeProcess(cfg, tmp_path).start()
        time.sleep(3.0)
        assert node.terminate() == 0
        assert rec.received == [sr_uid]
        report = status_report(Path(cfg.storage_dir) / "node.db")
        assert report["studies"]["done"]["count"] == 1
        assert report["deliveries"]["delivered"]["count"] == 1
        log = node.log()
        assert "event=node_stopped" in log and "requeued=0" in log
        assert PATIENT_NAME.split("^")[0] not in log and PATIENT_ID not in log and study_uid not in log
    finally:
        rec.stop()


@pytest.mark.network
def test_sigterm_during_work_persists_it_and_a_restart_finishes_it(
    dicom_dir: Path, tmp_path: Path, node_config
) -> None:
    rec = RecordingSCP().start()
    try:
        cfg = node_config(destinations=(rec.destination(),), idle_timeout_s=0.2, shutdown_grace_s=0.0)
        node = NodeProcess(cfg, tmp_path).start()
        db = JobQueue(Path(cfg.storage_dir) / "node.db")
        wait_for(lambda: "worker_ready" in node.log(), 60, "the worker to load the model")
        _, files = make_study(dicom_dir, tmp_path / "study")
        assert storescu(cfg.port, files).returncode == 0
        wait_for(lambda: db.counts()["running"] == 1, 30, "the run to start", interval=0.02)
        assert node.terminate() == 0  # no grace: the run is stopped and re-queued, not lost
        assert db.counts()["queued"] == 1 and rec.received == []
        assert '"requeued": 1' in node.log()  # JSON log line of node_stopped
        node = NodeProcess(cfg, tmp_path).start()
        wait_for(lambda: rec.received, 120, "the SR after the restart")
        time.sleep(1.0)
        assert node.terminate() == 0
        assert len(rec.received) == 1 and db.counts()["done"] == 1
        db.close()
    finally:
        rec.stop()
