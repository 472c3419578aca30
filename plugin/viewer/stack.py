"""The viewer stack: Orthanc (PACS with DICOMweb) + the UAR node + OHIF, all on loopback.

::

    browser --HTTP--> ViewerServer (OHIF dist/, /dicom-web, /wado) --HTTP--> Orthanc
                                                        Orthanc --C-STORE--> node --SR, PDF, SC--> Orthanc

:class:`ViewerStack` starts Orthanc with its DICOMweb plugin and the node registered as modality
``uarnode``, the node (in this process, its app workers as child processes) with Orthanc as source
and destination (C-STORE, or STOW-RS to Orthanc's DICOMweb with ``export="dicomweb"``), and the
OHIF web server. :meth:`ViewerStack.route` uploads a study to Orthanc, has Orthanc send it to the
node (``POST /modalities/uarnode/store``, as a PACS routing rule does) and waits until the node's
SR (and PDF, when ``write_pdf``; the attention-map Secondary Captures, Modality OT, when
``write_maps``) is back in the same Orthanc study.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from plugin.node.config import Destination, DicomWebDestination, NodeConfig, Source
from plugin.node.service import NodeService
from plugin.viewer.assets import ensure_ohif
from plugin.viewer.orthanc import Modality, Orthanc, free_port
from plugin.viewer.proxy import ViewerServer

NODE_AE = "UARNODE"
ORTHANC_AE = "ORTHANC"
ROUTE_TIMEOUT_S = 300.0  # the first study starts a worker and loads the model


@dataclass(frozen=True)
class RoutedStudy:
    """A study that went Orthanc -> node -> Orthanc: its UID, Orthanc id and the node's outputs."""

    study_uid: str
    orthanc_id: str
    sr: pydicom.Dataset
    pdf_instance: str | None  # Orthanc id of the Encapsulated PDF, if one came back
    map_instances: tuple[str, ...] = ()  # Orthanc ids of the attention-map pictures, if they came back

    def report_texts(self) -> list[str]:
        """The SR's Finding and Impression statements, as the viewer must show them."""
        out: list[str] = []
        for section in self.sr.ContentSequence:
            if section.ValueType == "CONTAINER" and section.ConceptNameCodeSequence[0].CodeValue in (
                "59776-5",  # Findings
                "19005-8",  # Impressions
            ):
                out += [str(item.TextValue) for item in section.ContentSequence if item.ValueType == "TEXT"]
        return out

    def report_plain(self) -> str:
        """Findings and Impression as one plain string (what the PDF also shows)."""
        return " ".join(" ".join(t.split()) for t in self.report_texts())


def referenced_images(sr: pydicom.Dataset) -> set[str]:
    """SOPInstanceUIDs of the IMAGE content items anywhere in the SR's content tree."""
    found: set[str] = set()
    items = list(sr.get("ContentSequence", []))
    while items:
        item = items.pop()
        if item.get("ValueType") == "IMAGE":
            found.add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        items += list(item.get("ContentSequence", []))
    return found


class ViewerStack:
    """Orthanc + node + OHIF in ``root`` (a scratch folder); :meth:`start`, :meth:`route`, :meth:`stop`."""

    def __init__(
        self,
        root: Path,
        *,
        model_path: str | None = None,
        write_pdf: bool = True,
        write_maps: bool = False,
        beam_size: int = 3,
        bind: str = "127.0.0.1",
        port: int = 0,
        export: str = "dimse",
        node_overrides: dict[str, object] | None = None,
    ) -> None:
        self.root = root
        self.write_pdf = write_pdf
        self.bind, self.port = bind, port
        node_port = free_port()
        self.orthanc = Orthanc(root / "orthanc", modalities=(Modality("uarnode", NODE_AE, node_port),))
        if export not in ("dimse", "dicomweb"):
            raise ValueError(f"export must be 'dimse' or 'dicomweb', got {export!r}")
        back: Destination | DicomWebDestination = (
            DicomWebDestination(name="orthanc", url=self.orthanc.dicomweb_url)
            if export == "dicomweb"
            else Destination(
                name="orthanc", ae_title=ORTHANC_AE, host="127.0.0.1", port=self.orthanc.dicom_port
            )
        )
        self.node_cfg = NodeConfig(
            ae_title=NODE_AE,
            bind="127.0.0.1",
            port=node_port,
            sources=(Source(ORTHANC_AE, host="127.0.0.1"),),
            storage_dir=str(root / "node"),
            min_free_mb=0,
            idle_timeout_s=1.0,
            model_path=model_path,
            app={"beam_size": beam_size, "write_pdf": write_pdf, "write_maps": write_maps},
            destinations=(back,),
            export_backoff_s=0.5,
            export_backoff_max_s=5.0,
            log_format="kv",
            **(node_overrides or {}),
        )
        self.node: NodeService | None = None
        self.server: ViewerServer | None = None

    @property
    def url(self) -> str:
        """Base URL of the viewer."""
        assert self.server is not None, "start() first"
        return self.server.url

    def study_url(self, study_uid: str) -> str:
        """The OHIF URL that opens ``study_uid``."""
        return f"{self.url}/viewer?StudyInstanceUIDs={study_uid}"

    def start(self) -> ViewerStack:
        """Fetch OHIF if needed, then start Orthanc, the node and the web server."""
        dist = ensure_ohif()
        self.orthanc.start()
        self.node = NodeService(self.node_cfg)
        self.node.start()
        self.server = ViewerServer(dist, self.orthanc.http_port, bind=self.bind, port=self.port).start()
        return self

    def stop(self) -> None:
        """Stop the web server, the node and Orthanc (what was started)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.node is not None:
            self.node.stop()
            self.node = None
        self.orthanc.stop()

    def __enter__(self) -> ViewerStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def route(self, files: Sequence[Path], timeout_s: float = ROUTE_TIMEOUT_S) -> RoutedStudy:
        """Upload ``files`` (one study) to Orthanc, route the study to the node, wait for the SR (+ PDF,
        + the attention maps: as many pictures as the study has views).

        Raises ``RuntimeError`` if the node rejects or fails the study, ``TimeoutError`` after
        ``timeout_s``.
        """
        uploaded = [self.orthanc.upload(Path(f)) for f in files]
        studies = {u["ParentStudy"] for u in uploaded}
        if len(studies) != 1:
            raise ValueError(f"the files belong to {len(studies)} studies; route one study at a time")
        [study_id] = studies
        answer = self.orthanc.send_to_modality("uarnode", [study_id])
        if answer.get("FailedInstancesCount"):
            raise RuntimeError(
                f"Orthanc could not send {answer['FailedInstancesCount']} instances to the node"
            )
        deadline = time.monotonic() + timeout_s
        sr: pydicom.Dataset | None = None
        while time.monotonic() < deadline:
            self._raise_if_node_gave_up()
            series = self.orthanc.series_of_study(study_id)
            by_modality = {s["MainDicomTags"].get("Modality"): s for s in series}
            if "SR" in by_modality and (not self.write_pdf or "DOC" in by_modality):
                sr_id = by_modality["SR"]["Instances"][0]
                if sr is None:
                    sr = pydicom.dcmread(self._instance_file(sr_id))
                maps = tuple(by_modality["OT"]["Instances"]) if "OT" in by_modality else ()
                # the pictures the SR references (none for a withheld report) must be back too
                if len(maps) >= len(referenced_images(sr)):
                    pdf = by_modality["DOC"]["Instances"][0] if "DOC" in by_modality else None
                    return RoutedStudy(str(sr.StudyInstanceUID), study_id, sr, pdf, maps)
            time.sleep(0.3)
        raise TimeoutError(f"no SR back in Orthanc after {timeout_s:g} s")

    def _instance_file(self, instance_id: str) -> Path:
        path = self.root / "fetched" / f"{instance_id}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(f"{self.orthanc.url}/instances/{instance_id}/file", timeout=60) as resp:
            path.write_bytes(resp.read())
        return path

    def _raise_if_node_gave_up(self) -> None:
        node = self.node
        assert node is not None
        if node.pool.last_fatal:
            raise RuntimeError(f"the app worker cannot start: {node.pool.last_fatal}")
        bad = node.queue.studies(["rejected", "failed"], limit=1)
        if bad:
            raise RuntimeError(f"the node {bad[0]['state']} the study: {bad[0]['reason']}")
