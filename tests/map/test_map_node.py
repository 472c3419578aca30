"""The DICOM node with ``runner: map``: one MAP container per study (plugin/node/map_runner.py).

Real peers as in tests/node: dcmtk storescu sends a real two-view study, the node stores it, runs
the MAP image on it (the tiny model mounted as ``model_path``, ``beam_size`` from the node's
``app`` settings) and exports the SR to a pynetdicom storage SCP. A run longer than
``study_timeout_s`` loses its container and is retried, then failed, like an in-process run; a
missing image keeps studies queued.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from plugin.node.config import NodeConfig, Source, load_config, write_config
from plugin.node.map_runner import MapPool
from plugin.node.service import NodeService
from plugin.settings import AppSettings
from plugin.viewer.stack import referenced_images
from tests.conftest import free_port
from tests.helpers.tiny import make_tiny_checkpoint
from tests.map.conftest import MapImage
from tests.node.conftest import NODE_AE, SENDER_AE, RecordingSCP, make_study, storescu, wait_for
from uar.checkpoint import read_metadata

MANUFACTURER = AppSettings().manufacturer  # of the SR's ContributingEquipmentSequence item


def map_node_config(tmp_path: Path, image: MapImage, model: Path, **overrides: object) -> NodeConfig:
    values: dict[str, object] = {
        "ae_title": NODE_AE,
        "bind": "127.0.0.1",
        "port": free_port(),
        "sources": (Source(SENDER_AE),),
        "storage_dir": str(tmp_path / "node"),
        "min_free_mb": 0,
        "idle_timeout_s": 0.7,
        "workers": 1,
        "study_timeout_s": 300.0,
        "max_attempts": 2,
        "retry_delay_s": 0.2,
        "model_path": str(model),
        "app": {"beam_size": 1},
        "runner": "map",
        "map_image": image.tag,
        "map_docker_host": image.env.get("DOCKER_HOST"),
        "export_backoff_s": 0.2,
        "export_timeout_s": 5.0,
        "shutdown_grace_s": 5.0,
    }
    return NodeConfig(**{**values, **overrides})


def node_containers(image: MapImage) -> list[str]:
    proc = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=org.uar.node.run=1"],
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout.split()


@pytest.mark.slow
@pytest.mark.network
def test_node_runs_each_study_in_a_map_container(
    map_image: MapImage, dicom_dir: Path, tmp_path: Path
) -> None:
    model = make_tiny_checkpoint(tmp_path / "model" / "tiny.safetensors")
    rec = RecordingSCP(extra_classes=(SecondaryCaptureImageStorage,)).start()
    app = {"beam_size": 1, "write_maps": True}  # the container's attention maps travel too
    cfg = map_node_config(tmp_path, map_image, model, destinations=(rec.destination(),), app=app)
    node = NodeService(cfg)
    assert isinstance(node.pool, MapPool)
    node.start()
    try:
        study_uid, files = make_study(dicom_dir, tmp_path / "study")
        sent = storescu(node.cfg.port, files)
        assert sent.returncode == 0, sent.stderr
        done = wait_for(
            lambda: any(ds.Modality == "SR" for ds in rec.datasets) or node.queue.studies(["failed"]),
            300,
            "the SR",
            explain=node.queue.counts,
        )
        assert rec.received, done
    finally:
        node.stop()
        rec.stop()
    *pictures, sr = rec.datasets
    assert sr.Modality == "SR" and sr.StudyInstanceUID == study_uid
    assert pictures and {ds.Modality for ds in pictures} == {"OT"}  # Secondary Captures, sent first
    assert referenced_images(sr) == {str(ds.SOPInstanceUID) for ds in pictures}
    [equipment] = [item for item in sr.ContributingEquipmentSequence if item.Manufacturer == MANUFACTURER]
    assert equipment.ManufacturerModelName == read_metadata(model)["model_name"]  # the mounted model
    assert node.queue.counts()["done"] == 1
    assert node_containers(map_image) == []  # --rm: nothing left behind


@pytest.mark.slow
@pytest.mark.network
def test_map_runs_follow_the_timeout_and_retry_rules(
    map_image: MapImage, dicom_dir: Path, tmp_path: Path
) -> None:
    model = make_tiny_checkpoint(tmp_path / "model" / "tiny.safetensors")
    cfg = map_node_config(tmp_path, map_image, model, study_timeout_s=1.5, max_attempts=2)
    node = NodeService(cfg)
    node.start()
    try:
        _, files = make_study(dicom_dir, tmp_path / "study")
        assert storescu(cfg.port, files).returncode == 0
        wait_for(
            lambda: node.queue.counts()["failed"] == 1, 120, "the study to fail", explain=node.queue.counts
        )
        [study] = node.queue.studies(["failed"])
        assert "exceeded 1.5 s" in study["reason"] and study["runs"] == 2
    finally:
        node.stop()
    assert node_containers(map_image) == []  # the overdue containers were removed


@pytest.mark.slow
def test_missing_map_image_keeps_studies_queued(map_image: MapImage, tmp_path: Path) -> None:
    pool = MapPool(1, "uar-report-node-map:no-such-tag", None, None, 60.0, map_image.env.get("DOCKER_HOST"))
    try:
        assert pool.poll() == [] and pool.idle() == []
        assert pool.last_fatal and "no-such-tag" in pool.last_fatal
    finally:
        pool.stop(0)
    with pytest.raises(ValueError, match="map_image"):
        NodeConfig(runner="map")
    with pytest.raises(ValueError, match="unknown keys"):
        MapPool(1, map_image.tag, None, {"beem_size": 1}, 60.0)
    path = tmp_path / "node.yaml"
    path.write_text("runner: map\nmap_image: uar-report-node-map:0.1.0\nmap_run_args: [--cpus, '2']\n")
    cfg = load_config(path)
    assert (cfg.runner, cfg.map_run_args) == ("map", ("--cpus", "2"))
    assert load_config(write_config(cfg, tmp_path / "again.yaml")) == cfg
