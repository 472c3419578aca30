"""Reliability with real peers: failure statuses retried, stuck runs moved to failed/, model errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from plugin.node.scp import echo
from plugin.node.store import study_key
from tests.node.conftest import (
    NODE_AE,
    SENDER_AE,
    RecordingSCP,
    make_study,
    storescu,
    wait_for,
)


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
    wait_for(lambda: node.queue.events(row["id"])[-1]["kind"] == "moved_to_failed", 10, "the move to failed/")
    assert row["attempts"] == 2 and "exceeded" in row["reason"]
    kinds = [e["kind"] for e in node.queue.events(row["id"])]
    assert kinds == ["failure", "failure", "moved_to_failed"]
    key = study_key(SENDER_AE, study_uid)
    assert len(list((node.store.root / "failed" / key).glob("*.dcm"))) == 2
    assert not node.store.incoming_dir(key).exists()
    # the supervisor restarted the killed worker: a new study is processed normally afterwards
    assert node.pool.slots[0].proc is None or node.pool.slots[0].proc.is_alive()


@pytest.mark.network
def test_a_model_that_cannot_load_keeps_studies_queued_and_the_node_up(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    cfg = node_config(model_path=str(tmp_path / "missing.safetensors"))
    node = running_node(cfg)
    _, files = make_study(dicom_dir, tmp_path / "study")
    assert storescu(cfg.port, files).returncode == 0
    fatal = wait_for(lambda: node.pool.last_fatal, 60, "the worker to report the model error")
    assert "FileNotFoundError" in str(fatal)
    wait_for(lambda: node.queue.counts()["queued"] == 1, 10, "the study to be queued")
    time.sleep(1.0)
    assert node.queue.counts()["queued"] == 1  # not charged, not failed: it waits for a working model
    assert echo("127.0.0.1", cfg.port, NODE_AE, SENDER_AE) == 0
