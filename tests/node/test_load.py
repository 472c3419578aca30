"""Load: 20 studies over 4 parallel associations, all 20 SRs delivered, none lost."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest

from tests.node.conftest import (
    StoreSCP,
    make_study,
    node_state,
    storescu,
    wait_for,
)


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
        wait_for(
            lambda: len(dest.files()) >= 20,
            240,
            "20 SRs at storescp",
            interval=0.5,
            explain=lambda: (len(dest.files()), node_state(node)),
        )
        time.sleep(1.0)
        srs = [pydicom.dcmread(p, stop_before_pixels=True) for p in dest.files()]
    finally:
        dest.stop()
    assert sorted(ds.StudyInstanceUID for ds in srs) == sorted(uid for uid, _ in studies)
    assert node.queue.counts()["done"] == 20
    assert node.metrics.value("uar_node_instances_received_total") == 40
