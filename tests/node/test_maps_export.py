"""The node delivers the attention-map Secondary Captures (app setting write_maps) with the SR:
dcmtk storescu -> node (tiny model) -> a pynetdicom storage SCP, one association, pictures first."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from plugin.node.service import NodeService
from plugin.viewer.stack import referenced_images
from tests.node.conftest import FRONTAL, RecordingSCP, make_study, storescu, wait_for


def send_with_maps(
    rec: RecordingSCP, dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> tuple[str, NodeService]:
    """A node (tiny model, write_maps) exporting to ``rec``, sent a one-view study; returns its
    StudyInstanceUID and the node once ``rec`` has the SR."""
    cfg = node_config(destinations=(rec.destination(),), app={"beam_size": 1, "write_maps": True})
    node = running_node(cfg)
    study_uid, files = make_study(dicom_dir, tmp_path / "study", files=(FRONTAL,))
    assert storescu(cfg.port, files).returncode == 0
    wait_for(lambda: any(ds.Modality == "SR" for ds in rec.datasets), 120, "the SR")
    return study_uid, node


@pytest.mark.network
def test_attention_maps_are_exported_before_the_sr_that_references_them(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    rec = RecordingSCP(extra_classes=(SecondaryCaptureImageStorage,)).start()
    try:
        study_uid, node = send_with_maps(rec, dicom_dir, tmp_path, node_config, running_node)
        assert [ds.Modality for ds in rec.datasets] == ["OT", "SR"]  # one view: one picture, sent first
        sc, sr = rec.datasets
        assert sc.StudyInstanceUID == sr.StudyInstanceUID == study_uid
        assert sc.SOPClassUID == SecondaryCaptureImageStorage
        assert referenced_images(sr) == {str(sc.SOPInstanceUID)}
        assert rec.associations == 1
        wait_for(lambda: node.queue.delivery_counts().get("delivered") == 2, 10, "both deliveries recorded")
    finally:
        rec.stop()


@pytest.mark.network
def test_a_destination_without_secondary_capture_still_gets_the_sr(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    rec = RecordingSCP().start()  # accepts the SR classes only, as a PACS not set up for the maps
    try:
        _, node = send_with_maps(rec, dicom_dir, tmp_path, node_config, running_node)
        assert [ds.Modality for ds in rec.datasets] == ["SR"]
        wait_for(
            lambda: any(d["kind"] != "sr" and d["last_error"] for d in node.queue.deliveries()),
            10,
            "the picture's retry reason",
        )
        [picture] = [d for d in node.queue.deliveries() if d["kind"] != "sr"]
        assert picture["state"] != "delivered"
        assert picture["last_error"] == (
            "the destination did not accept Secondary Capture Image Storage in this association"
        )
    finally:
        rec.stop()
