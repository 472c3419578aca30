"""The node routes an out-of-domain study like any other: storescu -> node -> flagged SR at storescp.

The tiny model gets an input check that puts every study out of domain (threshold -1); with
``ood_policy: flag`` its SR is delivered, says so in its series description, and the queue status
and the Prometheus metrics count the study by verdict.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest
import torch

from plugin.node.cli import status_report
from tests.conftest import free_port, require_tool
from tests.node.conftest import StoreSCP, make_study, storescu, wait_for
from uar.checkpoint import load_checkpoint, write_input_check
from uar.ood import InputCheck


@pytest.fixture(scope="module")
def out_of_domain_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_checkpoint(tiny_model).cfg
    check = InputCheck(
        mean=torch.zeros(cfg.n_views, cfg.d_model),
        precision=torch.eye(cfg.d_model).repeat(cfg.n_views, 1, 1),
        threshold=-1.0,
        n_reference=2,
        n_calibration=1,
    )
    return write_input_check(tiny_model, check, tmp_path_factory.mktemp("ood") / "ood.safetensors")


@pytest.mark.network
def test_flagged_study_is_delivered_and_counted_by_verdict(
    dicom_dir: Path, tmp_path: Path, node_config, running_node, out_of_domain_model: Path
) -> None:
    dest = StoreSCP(tmp_path / "dest").start()
    try:
        cfg = node_config(
            destinations=(dest.destination(),),
            metrics_port=free_port(),
            model_path=str(out_of_domain_model),
            ood_policy="flag",
        )
        node = running_node(cfg)
        study_uid, files = make_study(dicom_dir, tmp_path / "study")
        assert storescu(cfg.port, files).returncode == 0
        [sr_path] = wait_for(dest.files, 120, "the flagged SR at storescp")
    finally:
        dest.stop()
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == study_uid and sr.SeriesDescription.endswith(
        "OUTSIDE VALIDATED INPUT DOMAIN"
    )
    check = subprocess.run(
        [require_tool("dciodvfy"), str(sr_path)], capture_output=True, text=True, timeout=60
    )
    assert [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")] == []
    wait_for(lambda: node.queue.delivery_counts()["delivered"] == 1, 10, "the delivery to be recorded")
    report = status_report(node.store.db_path)
    assert report["studies"]["done"]["count"] == 1
    assert report["input_domain"] == {"in_domain": 0, "out_of_domain": 1, "unchecked": 0}
    shown = subprocess.run(
        [sys.executable, "-m", "plugin.node", "status", "--storage", str(node.store.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "input domain: in_domain 0, out_of_domain 1, unchecked 0" in shown.stdout, shown.stderr
    body = urllib.request.urlopen(f"http://127.0.0.1:{cfg.metrics_port}/metrics", timeout=10).read().decode()
    assert 'uar_node_studies_by_input_domain_total{verdict="out_of_domain"} 1' in body


@pytest.mark.network
def test_withheld_as_rejection_is_a_terminal_rejection(
    dicom_dir: Path, tmp_path: Path, node_config, running_node, out_of_domain_model: Path
) -> None:
    cfg = node_config(
        model_path=str(out_of_domain_model),
        ood_policy="withhold",
        app={"beam_size": 1, "ood_withhold_as": "rejection"},
    )
    node = running_node(cfg)
    _, files = make_study(dicom_dir, tmp_path / "study")
    assert storescu(cfg.port, files).returncode == 0
    wait_for(lambda: node.queue.counts()["rejected"] == 1, 120, "the study to be rejected")
    [row] = node.queue.studies()
    assert "outside the model's validated input domain" in row["reason"] and row["attempts"] == 1
    assert [e["kind"] for e in node.queue.events(row["id"])] == ["input_domain", "rejection"]
    assert node.metrics.value("uar_node_studies_by_input_domain_total", verdict="out_of_domain") == 1
