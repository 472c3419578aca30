"""A destination down for 30 s, then up: the SR is delivered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.node.conftest import (
    StoreSCP,
    make_study,
    storescu,
    wait_for,
)

DOWN_S = 30.0  # how long the destination stays down (the issue asks for a real 30 s outage)


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
