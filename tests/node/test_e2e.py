"""End to end with real peers: dcmtk storescu -> node -> app -> SR at dcmtk storescp (dciodvfy-clean)."""

from __future__ import annotations

import logging
import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest

from plugin.node.cli import status_report
from tests.conftest import free_port, require_tool
from tests.node.conftest import (
    PATIENT_ID,
    PATIENT_NAME,
    RecordingSCP,
    StoreSCP,
    make_study,
    storescu,
    wait_for,
)


@pytest.mark.network
def test_storescu_to_node_to_storescp_sr_passes_dciodvfy(
    dicom_dir: Path, tmp_path: Path, node_config, running_node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plugin.node")
    dest = StoreSCP(tmp_path / "dest").start()
    try:
        cfg = node_config(destinations=(dest.destination(),), metrics_port=free_port())
        node = running_node(cfg)
        study_uid, files = make_study(dicom_dir, tmp_path / "study")
        sent = storescu(cfg.port, files)
        assert sent.returncode == 0, sent.stderr
        [sr_path] = wait_for(dest.files, 120, "the SR at storescp")
    finally:
        dest.stop()
    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == study_uid
    assert sr.PatientID == PATIENT_ID  # patient context copied from the evidence
    check = subprocess.run(
        [require_tool("dciodvfy"), str(sr_path)], capture_output=True, text=True, timeout=60
    )
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], check.stderr
    # the queue, the status command and the metrics agree
    wait_for(lambda: node.queue.delivery_counts()["delivered"] == 1, 10, "the delivery to be recorded")
    report = status_report(node.store.db_path)
    assert report["studies"]["done"]["count"] == 1 and report["deliveries"]["delivered"]["count"] == 1
    shown = subprocess.run(
        [sys.executable, "-m", "plugin.node", "status", "--storage", str(node.store.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "done 1" in shown.stdout and "delivered 1" in shown.stdout, shown.stderr
    body = urllib.request.urlopen(f"http://127.0.0.1:{cfg.metrics_port}/metrics", timeout=10).read().decode()
    assert "uar_node_instances_received_total 2" in body
    assert "uar_node_srs_produced_total 1" in body
    assert 'uar_node_exports_total{destination="dest"} 1' in body
    assert 'uar_node_queue_depth{state="done"} 1' in body
    assert "uar_node_study_latency_seconds_count" in body
    # structured logs, and no patient name or ID in any of them
    events = [getattr(r, "event", "") for r in caplog.records]
    assert {"study_opened", "study_queued", "study_started", "study_done", "export_delivered"} <= set(events)
    assert PATIENT_NAME.split("^")[0] not in caplog.text and PATIENT_ID not in caplog.text
    assert study_uid not in caplog.text


@pytest.mark.network
def test_non_chest_study_is_rejected_not_retried(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    rec = RecordingSCP().start()
    try:
        cfg = node_config(destinations=(rec.destination(),))
        node = running_node(cfg)
        _, files = make_study(dicom_dir, tmp_path / "leg", files=["pydicom-data__RG3_J2KI.dcm"])
        assert storescu(cfg.port, files, extra=["-xw"]).returncode == 0
        wait_for(lambda: node.queue.counts()["rejected"] == 1, 120, "the study to be rejected")
        [row] = node.queue.studies()
        assert row["attempts"] == 1 and row["reason"]
        assert [e["kind"] for e in node.queue.events(row["id"])] == ["rejection"]
        assert rec.received == []
    finally:
        rec.stop()


@pytest.mark.network
def test_late_instance_reopens_a_done_study_and_a_new_sr_is_sent(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    rec = RecordingSCP().start()
    try:
        cfg = node_config(destinations=(rec.destination(),))
        node = running_node(cfg)
        study_uid, files = make_study(dicom_dir, tmp_path / "study")
        assert storescu(cfg.port, files[:1]).returncode == 0  # the frontal view alone first
        wait_for(lambda: len(rec.received) == 1, 120, "the first SR")
        _, late = make_study(dicom_dir, tmp_path / "late", study_uid=study_uid)
        assert storescu(cfg.port, late[1:]).returncode == 0  # the lateral view arrives later
        wait_for(lambda: len(rec.received) == 2, 120, "the second SR")
        assert rec.received[0] != rec.received[1]
        assert {ds.StudyInstanceUID for ds in rec.datasets} == {study_uid}
        [row] = node.queue.studies()
        assert row["state"] == "done" and row["n_instances"] == 2 and row["runs"] == 2
    finally:
        rec.stop()


@pytest.mark.network
def test_sr_and_pdf_are_exported_over_one_association_per_study(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    rec = RecordingSCP().start()
    try:
        cfg = node_config(destinations=(rec.destination(),), app={"beam_size": 1, "write_pdf": True})
        node = running_node(cfg)
        _, files = make_study(dicom_dir, tmp_path / "study")
        assert storescu(cfg.port, files).returncode == 0
        wait_for(lambda: len(rec.received) == 2, 120, "the SR and the PDF")
        assert sorted(ds.Modality for ds in rec.datasets) == ["DOC", "SR"]
        assert rec.associations == 1
        wait_for(lambda: node.queue.delivery_counts()["delivered"] == 2, 10, "both deliveries recorded")
    finally:
        rec.stop()
