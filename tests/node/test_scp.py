"""Storage SCP against real senders (dcmtk storescu, pynetdicom SCU): storage, statuses, admission."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    Verification,
)

from plugin.node.config import Source, TLSConfig
from plugin.node.scp import echo
from plugin.node.service import NodeService
from plugin.node.store import study_key
from tests.conftest import free_port, require_tool
from tests.node.conftest import FRONTAL, LATERAL, NODE_AE, SENDER_AE, make_study, storescu, wait_for


def _sender(contexts: list[tuple[str, str]], aet: str = SENDER_AE) -> AE:
    ae = AE(ae_title=aet)
    for sop_class, ts in contexts:
        ae.add_requested_context(sop_class, ts)
    return ae


def test_storescu_study_is_stored_durably_and_idempotently(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    cfg = node_config(workers=0, idle_timeout_s=0.3)
    node = running_node(cfg)
    assert echo("127.0.0.1", cfg.port, NODE_AE, SENDER_AE) == 0
    study_uid, files = make_study(dicom_dir, tmp_path / "study")
    done = storescu(cfg.port, files)
    assert done.returncode == 0, done.stderr
    folder = node.store.incoming_dir(study_key(SENDER_AE, study_uid))
    stored = sorted(folder.iterdir())
    sent = {pydicom.dcmread(f).SOPInstanceUID: f for f in files}
    assert sorted(p.stem for p in stored) == sorted(sent)
    for p in stored:  # byte-identical data set, as received (no re-encoding)
        assert pydicom.dcmread(p).PixelData == pydicom.dcmread(sent[p.stem]).PixelData
    wait_for(lambda: node.queue.counts()["queued"] == 1, 10, "the study to be queued after its idle timeout")
    again = storescu(cfg.port, files)  # the PACS resends: idempotent, no new study, no reopen
    assert again.returncode == 0, again.stderr
    [row] = node.queue.studies()
    assert row["n_instances"] == 2 and row["state"] == "queued"
    assert node.metrics.value("uar_node_instances_received_total") == 4
    assert node.metrics.value("uar_node_studies_received_total") == 1


def test_unknown_calling_ae_and_wrong_called_ae_are_rejected(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    cfg = node_config(workers=0, sources=(Source(SENDER_AE),))
    node = running_node(cfg)
    _, files = make_study(dicom_dir, tmp_path / "study")
    intruder = storescu(cfg.port, files, aet="INTRUDER")
    assert intruder.returncode != 0
    assert "Calling AE Title Not Recognized" in intruder.stderr
    wrong_called = storescu(cfg.port, files, aec="SOMEONE")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stderr
    assert node.queue.counts()["receiving"] == 0 and list((node.store.root / "incoming").iterdir()) == []


def test_source_host_pinning_answers_not_authorised(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    cfg = node_config(workers=0, sources=(Source(SENDER_AE, host="10.9.8.7"),))
    running_node(cfg)
    _, files = make_study(dicom_dir, tmp_path / "study")
    ds = pydicom.dcmread(files[0])
    ae = _sender([(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0124
    assoc.release()


def test_corrupt_and_malformed_instances_fail_while_the_others_are_stored(
    dicom_dir: Path, tmp_path: Path, node_config, running_node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # send files byte for byte (pynetdicom would otherwise decode and re-encode, repairing the cut)
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    cfg = node_config(workers=0)
    node = running_node(cfg)
    study_uid, files = make_study(dicom_dir, tmp_path / "study")
    good1, good2 = (pydicom.dcmread(f) for f in files)
    # a truncated data set: valid file meta, the element stream cut in the middle of Pixel Data
    truncated = tmp_path / "truncated.dcm"
    data = files[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    # encapsulated JPEG 2000 missing the last 4 bytes (half of its sequence delimiter)
    j2k = dicom_dir / "pydicom-data__RG3_J2KI.dcm"
    cut_j2k = tmp_path / "cut_j2k.dcm"
    cut_j2k.write_bytes(j2k.read_bytes()[:-4])
    j2k_meta = pydicom.dcmread(j2k, stop_before_pixels=True)
    bad = pydicom.dcmread(files[0])
    bad.SOPInstanceUID = generate_uid()
    bad.file_meta.MediaStorageSOPInstanceUID = bad.SOPInstanceUID
    del bad.StudyInstanceUID  # no study: cannot be grouped
    contexts = [(good1.SOPClassUID, good1.file_meta.TransferSyntaxUID)]
    contexts += [(good2.SOPClassUID, good2.file_meta.TransferSyntaxUID)]
    contexts += [(j2k_meta.SOPClassUID, j2k_meta.file_meta.TransferSyntaxUID)]
    assoc = _sender(contexts).associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
    assert assoc.is_established
    statuses = [assoc.send_c_store(good1).Status]
    statuses.append(assoc.send_c_store(truncated).Status)
    statuses.append(assoc.send_c_store(bad).Status)
    statuses.append(assoc.send_c_store(good2).Status)
    statuses.append(assoc.send_c_store(cut_j2k).Status)
    assoc.release()
    assert statuses[0] == 0x0000 and statuses[3] == 0x0000
    assert statuses[4] == 0xC210
    assert statuses[1] == 0xC210  # cannot understand
    assert statuses[2] == 0xA900  # data set does not match SOP class (no StudyInstanceUID)
    stored = sorted(p.stem for p in node.store.incoming_dir(study_key(SENDER_AE, study_uid)).iterdir())
    assert stored == sorted([good1.SOPInstanceUID, good2.SOPInstanceUID])
    assert node.metrics.value("uar_node_instances_refused_total", status="0xC210") == 2


def test_every_real_transfer_syntax_and_deflate_is_accepted(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    cfg = node_config(workers=0)
    node = running_node(cfg)
    files = sorted(dicom_dir.glob("*.dcm"))
    deflated = pydicom.dcmread(dicom_dir / FRONTAL)
    deflated.SOPInstanceUID = generate_uid()
    deflated.file_meta.MediaStorageSOPInstanceUID = deflated.SOPInstanceUID
    deflated.save_as(tmp_path / "deflated.dcm", implicit_vr=False, little_endian=True)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    files.append(tmp_path / "deflated.dcm")
    metas = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    contexts = sorted({(m.SOPClassUID, m.file_meta.TransferSyntaxUID) for m in metas})
    assert {c[0] for c in contexts} >= {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        SecondaryCaptureImageStorage,
    }
    assert len({c[1] for c in contexts}) >= 6  # J2K x2, JPEG x2, EVRLE, IVRLE, deflate
    assoc = _sender(contexts).associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
    assert assoc.is_established
    assert all(cx.result == 0 for cx in assoc.accepted_contexts)
    statuses = [assoc.send_c_store(f).Status for f in files]
    assoc.release()
    assert statuses == [0] * len(files)
    n_unique = len({m.SOPInstanceUID for m in metas})  # RG1_J2KI/J2KR share one SOP UID
    assert node.metrics.value("uar_node_instances_received_total") == len(files)
    total = sum(len(list(d.iterdir())) for d in (node.store.root / "incoming").iterdir())
    assert total == n_unique


def test_dcmtk_compressed_send_and_echo_cli(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    cfg = node_config(workers=0)
    running_node(cfg)
    j2k = dicom_dir / "pylibjpeg-data__966_fixed.dcm"  # DX, JPEG 2000 lossless
    sent = storescu(cfg.port, [j2k], extra=["-xv"])
    assert sent.returncode == 0, sent.stderr
    out = subprocess.run(
        [require_tool("echoscu"), "-aet", SENDER_AE, "-aec", NODE_AE, "127.0.0.1", str(cfg.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "plugin.node",
            "echo",
            "127.0.0.1",
            str(cfg.port),
            "--aec",
            NODE_AE,
            "--aet",
            SENDER_AE,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0 and "status 0x0000" in cli.stdout, cli.stderr


def test_full_disk_answers_out_of_resources(
    dicom_dir: Path, tmp_path: Path, node_config, running_node
) -> None:
    """A real full disk: the store on a 1 MiB tmpfs (the tests run as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        cfg = node_config(workers=0, storage_dir=str(mnt / "node"))
        node = running_node(cfg)
        study_uid, files = make_study(
            dicom_dir, tmp_path / "study", files=[LATERAL, "nhsx__nih-chestxray14_dx.dcm"]
        )
        small, big = (pydicom.dcmread(f) for f in files)  # 38 kB fits, 1 MB does not
        contexts = [(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in (small, big)]
        assoc = _sender(contexts).associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
        statuses = [assoc.send_c_store(files[0]).Status, assoc.send_c_store(files[1]).Status]
        assoc.release()
        assert statuses == [0x0000, 0xA700]
        folder = node.store.incoming_dir(study_key(SENDER_AE, study_uid))
        assert [p.stem for p in folder.iterdir()] == [small.SOPInstanceUID]
        assert list((node.store.root / "tmp").iterdir()) == []  # nothing partial left behind
        [row] = node.queue.studies()
        assert row["n_instances"] == 1
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_tls_only_admits_tls_clients_with_a_trusted_certificate(
    tmp_path: Path, node_config, running_node
) -> None:
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tls = TLSConfig(cert=str(cert), key=str(key), ca=str(cert))  # self-signed: its own CA
    cfg = node_config(workers=0, tls=tls)
    running_node(cfg)
    ae = _sender([(Verification, ImplicitVRLittleEndian)])
    ae.acse_timeout = ae.network_timeout = 5
    plain = ae.associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
    assert not plain.is_established
    secure = ae.associate("127.0.0.1", cfg.port, ae_title=NODE_AE, tls_args=(tls.client_context(), None))
    assert secure.is_established
    assert secure.send_c_echo().Status == 0x0000
    secure.release()


def test_maximum_associations_is_enforced(node_config, running_node) -> None:
    cfg = node_config(workers=0, max_associations=1)
    node = running_node(cfg)
    ae = _sender([(Verification, ImplicitVRLittleEndian)])
    first = ae.associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
    assert first.is_established
    second = ae.associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
    assert second.is_rejected
    first.release()
    wait_for(lambda: node.scp.open_associations() == 0, 10, "the first association to end")
    third = ae.associate("127.0.0.1", cfg.port, ae_title=NODE_AE)
    assert third.is_established
    third.release()


def test_a_second_node_on_the_same_storage_is_refused(node_config, running_node) -> None:
    cfg = node_config(workers=0)
    running_node(cfg)
    with pytest.raises(RuntimeError, match="another node is already running"):
        NodeService(replace(cfg, port=free_port()))
