"""The node delivers the attention-map Secondary Captures (app setting write_maps) with the SR:
dcmtk storescu -> node (tiny model) -> a pynetdicom storage SCP, one association, pictures first."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from plugin.viewer.stack import referenced_images
from tests.node.conftest import FRONTAL, RecordingSCP, make_study, storescu, wait_for


@pytest.mark.network
def test_attention_maps_are_exported_before_the_sr_that_references_them(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    rec = RecordingSCP()
    rec.ae.add_supported_context(
        SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )
    rec.start()
    try:
        cfg = node_config(destinations=(rec.destination(),), app={"beam_size": 1, "write_maps": True})
        node = running_node(cfg)
        study_uid, files = make_study(dicom_dir, tmp_path / "study", files=(FRONTAL,))
        assert storescu(cfg.port, files).returncode == 0
        wait_for(lambda: any(ds.Modality == "SR" for ds in rec.datasets), 120, "the SR")
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
        cfg = node_config(destinations=(rec.destination(),), app={"beam_size": 1, "write_maps": True})
        node = running_node(cfg)
        study_uid, files = make_study(dicom_dir, tmp_path / "study", files=(FRONTAL,))
        assert storescu(cfg.port, files).returncode == 0
        wait_for(lambda: any(ds.Modality == "SR" for ds in rec.datasets), 120, "the SR")
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
