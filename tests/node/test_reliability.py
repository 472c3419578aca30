"""Reliability with real peers: kill -9 and restart, destination down 30 s, failure statuses,
stuck runs, graceful SIGTERM, and 20 studies over 4 parallel associations."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from plugin.node.cli import status_report
from plugin.node.queue import JobQueue
from plugin.node.store import study_key
from tests.node.conftest import (
    PATIENT_ID,
    PATIENT_NAME,
    SENDER_AE,
    NodeProcess,
    RecordingSCP,
    StoreSCP,
    make_study,
    storescu,
    wait_for,
)

DOWN_S = 30.0  # how long the destination stays down in the outage test


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
@pytest.mark.slow
def test_destination_down_for_30_s_then_up_is_delivered(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    dest = StoreSCP(tmp_path / "dest")  # not started: its port refuses connections
    cfg = node_config(destinations=(dest.destination(),), export_backoff_s=0.5, export_backoff_max_s=2.0)
    node = running_node(cfg)
    _, files = make_study(dicom_dir, tmp_path / "study")
    assert storescu(cfg.port, files).returncode == 0
    wait_for(lambda: node.queue.counts()["done"] == 1, 120, "the SR to be produced")
    down_since = time.monotonic()
    time.sleep(DOWN_S)
    [delivery] = node.queue.deliveries()
    assert delivery["state"] == "pending" and delivery["attempts"] >= 5, delivery
    assert "connection failed" in delivery["last_error"]
    dest.start()
    try:
        wait_for(dest.files, 30, "the SR once the destination is back")
        assert time.monotonic() - down_since >= DOWN_S
        wait_for(lambda: node.queue.delivery_counts()["delivered"] == 1, 10, "the delivery record")
    finally:
        dest.stop()
    assert len(dest.files()) == 1


@pytest.mark.network
def test_failure_statuses_are_retried_until_success(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    rec = RecordingSCP(statuses=[0xA700, 0xC000]).start()  # out of resources, then cannot understand
    try:
        cfg = node_config(destinations=(rec.destination(),))
        node = running_node(cfg)
        _, files = make_study(dicom_dir, tmp_path / "study")
        assert storescu(cfg.port, files).returncode == 0
        wait_for(lambda: rec.received, 120, "the SR after two refusals")
        uid = rec.received[0]
        assert rec.attempts == [(uid, 0xA700), (uid, 0xC000), (uid, 0x0000)]
        wait_for(lambda: node.queue.delivery_counts()["delivered"] == 1, 10, "the delivery record")
        [delivery] = node.queue.deliveries()
        assert delivery["attempts"] == 3
        assert (
            node.metrics.value("uar_node_export_failures_total", destination="recorder", final="false") == 2
        )
    finally:
        rec.stop()


@pytest.mark.network
def test_stuck_runs_are_killed_retried_then_moved_to_failed(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    cfg = node_config(study_timeout_s=0.2, max_attempts=2)  # every run outlives its timeout
    node = running_node(cfg)
    study_uid, files = make_study(dicom_dir, tmp_path / "study")
    assert storescu(cfg.port, files).returncode == 0
    wait_for(lambda: node.queue.counts()["failed"] == 1, 120, "the study to be marked failed")
    [row] = node.queue.studies()
    assert row["attempts"] == 2 and "exceeded" in row["reason"]
    kinds = [e["kind"] for e in node.queue.events(row["id"])]
    assert kinds == ["failure", "failure", "moved_to_failed"]
    key = study_key(SENDER_AE, study_uid)
    assert len(list((node.store.root / "failed" / key).glob("*.dcm"))) == 2
    assert not node.store.incoming_dir(key).exists()
    # the supervisor restarted the killed worker: a new study is processed normally afterwards
    assert node.pool.slots[0].proc is None or node.pool.slots[0].proc.is_alive()


@pytest.mark.network
@pytest.mark.slow
def test_twenty_studies_over_four_parallel_associations(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    dest = StoreSCP(tmp_path / "dest").start()
    try:
        cfg = node_config(destinations=(dest.destination(),), workers=2, idle_timeout_s=1.0)
        node = running_node(cfg)
        studies = [make_study(dicom_dir, tmp_path / f"s{i:02d}") for i in range(20)]
        groups = [[f for _, fs in studies[i::4] for f in fs] for i in range(4)]
        results: list[subprocess.CompletedProcess] = []
        senders = [threading.Thread(target=lambda g=g: results.append(storescu(cfg.port, g))) for g in groups]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
        wait_for(lambda: len(dest.files()) >= 20, 150, "20 SRs at storescp", interval=0.5)
        time.sleep(1.0)
        srs = [pydicom.dcmread(p, stop_before_pixels=True) for p in dest.files()]
    finally:
        dest.stop()
    assert sorted(ds.StudyInstanceUID for ds in srs) == sorted(uid for uid, _ in studies)
    assert node.queue.counts()["done"] == 20
    assert node.metrics.value("uar_node_instances_received_total") == 40
