"""Storage SCP: receives CR / DX / Secondary Capture instances and answers C-ECHO.

Each C-STORE is validated, written durably (store.py) and recorded in the job queue (queue.py)
before Success (0x0000) is returned. Failure statuses (PS3.4 Table B.2-1):

- 0xA700 out of resources: disk full (ENOSPC) or below ``min_free_mb`` (nothing partial is kept);
- 0xA900 data set does not match SOP class: missing / malformed UIDs, or UIDs that differ from
  the C-STORE request's Affected SOP Class / Instance UID;
- 0xC210 cannot understand: the data set cannot be decoded (corrupt or truncated);
- 0x0124 not authorised: the calling host does not match the source's configured ``host``;
- 0xC211 any other processing failure.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)

from plugin.node.config import NodeConfig
from plugin.node.guard import GuardedServer, GuardLimits
from plugin.node.log import event, safe_ae, uid_hash
from plugin.node.metrics import Metrics
from plugin.node.queue import JobQueue
from plugin.node.store import NO_SPACE_ERRNOS, InstanceStore, is_valid_uid, study_key
from uar.data.dicom_guard import UnsafeDicom, check_dataset_bytes

STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)

TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)

OUT_OF_RESOURCES = 0xA700
NOT_MATCHING_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210
PROCESSING_FAILURE = 0xC211
NOT_AUTHORISED = 0x0124
UNDEFINED_LENGTH = 0xFFFFFFFF


class StorageSCP:
    """The node's listening AE; :meth:`busy_studies` tells the scheduler which studies are still arriving."""

    def __init__(self, cfg: NodeConfig, store: InstanceStore, queue: JobQueue, metrics: Metrics) -> None:
        self.cfg = cfg
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self._lock = threading.Lock()
        self._open: dict[int, set[int]] = {}  # id(association) -> study ids it delivered to
        self._stats: dict[int, list[int]] = {}  # id(association) -> [stored, refused]
        self._hosts = {s.ae_title: s.host for s in cfg.sources if s.host}
        self.server: GuardedServer | None = None
        self.limits = cfg.dicom_limits
        # Received values are checked by the node's own rules (UID grammar, limits); pydicom's
        # per-value warnings would quote them in the log.
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        self.ae = self._build_ae()

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.cfg.ae_title)
        ae.require_called_aet = self.cfg.require_called_aet
        if self.cfg.sources:
            ae.require_calling_aet = [s.ae_title for s in self.cfg.sources]
        ae.maximum_associations = self.cfg.max_associations
        ae.maximum_pdu_size = self.cfg.max_pdu
        ae.network_timeout = self.cfg.association_idle_timeout_s
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        return ae

    @property
    def port(self) -> int:
        """The bound TCP port (useful when ``cfg.port`` is 0)."""
        if self.server is None:
            raise RuntimeError("the SCP is not started")
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Start listening on ``cfg.bind:cfg.port`` in background threads."""
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        ssl_context = self.cfg.tls.server_context() if self.cfg.tls else None
        cfg = self.cfg
        max_dataset = cfg.max_dataset_mb * 2**20
        limits = GuardLimits(
            first_pdu_timeout_s=cfg.first_pdu_timeout_s,
            max_associate_rq=cfg.max_associate_rq_kb * 1024,
            max_pending=cfg.max_pending_connections,
            max_pending_per_peer=cfg.max_pending_per_peer,
            max_associations_per_peer=cfg.max_associations_per_peer,
            max_pdu=cfg.max_pdu + 6 if cfg.max_pdu else max_dataset + 65536,
            max_dataset=max_dataset,
        )
        self.server = self.ae.make_server(
            (cfg.bind, cfg.port),
            evt_handlers=handlers,
            ssl_context=ssl_context,
            server_class=GuardedServer,
            limits=limits,
            on_refused=lambda reason: self.metrics.inc("uar_node_connections_refused_total", reason=reason),
            on_store_refused=lambda status: self.metrics.inc(
                "uar_node_instances_refused_total", status=f"0x{status:04X}"
            ),
        )
        thread = threading.Thread(target=self.server.serve_forever, name="scp-accept", daemon=True)
        thread.start()
        self.ae._servers.append(self.server)  # as AE.start_server does: AE.shutdown() stops it
        event(
            "scp_listening", ae=self.cfg.ae_title, bind=self.cfg.bind, port=self.port, tls=bool(ssl_context)
        )

    def stop_accepting(self) -> None:
        """Close the listening socket; associations already open keep running."""
        if self.server is not None:
            self.server.shutdown()

    def open_associations(self) -> int:
        """Number of associations currently open."""
        return len(self.ae.active_associations)

    def abort_all(self) -> None:
        """Abort every open association (their unacknowledged instances will be resent by the peers)."""
        for assoc in self.ae.active_associations:
            assoc.abort()

    def busy_studies(self) -> set[int]:
        """Ids of studies that an open association has sent instances to."""
        with self._lock:
            return set().union(*self._open.values()) if self._open else set()

    # --- event handlers (run in the association's thread) ------------------------------------------
    def _on_accepted(self, ev: evt.Event) -> None:
        with self._lock:
            self._open[id(ev.assoc)] = set()
            self._stats[id(ev.assoc)] = [0, 0]

    def _on_rejected(self, ev: evt.Event) -> None:
        event("association_rejected", logging.WARNING, calling_ae=safe_ae(ev.assoc.requestor.ae_title))

    def _on_closed(self, ev: evt.Event) -> None:
        with self._lock:
            studies = self._open.pop(id(ev.assoc), None)
            stats = self._stats.pop(id(ev.assoc), None)
        if studies is not None and stats is not None:
            event(
                "association_closed",
                calling_ae=safe_ae(ev.assoc.requestor.ae_title),
                how=ev.event.name,
                stored=stats[0],
                refused=stats[1],
                studies=len(studies),
            )

    def _on_store(self, ev: evt.Event) -> int:
        calling = ev.assoc.requestor.ae_title.strip()
        status, reason, study_id, n_bytes = self._store(ev, calling)
        with self._lock:
            stats = self._stats.setdefault(id(ev.assoc), [0, 0])
            stats[0 if status == 0 else 1] += 1
            if study_id is not None:
                self._open.setdefault(id(ev.assoc), set()).add(study_id)
        if status == 0:
            self.metrics.inc("uar_node_instances_received_total")
            self.metrics.inc("uar_node_bytes_received_total", n_bytes)
        else:
            self.metrics.inc("uar_node_instances_refused_total", status=f"0x{status:04X}")
            event(
                "instance_refused",
                logging.WARNING,
                calling_ae=safe_ae(calling),
                status=f"0x{status:04X}",
                reason=reason,
            )
        return status

    def _store(self, ev: evt.Event, calling: str) -> tuple[int, str, int | None, int]:
        """Validate, store and enqueue one instance: (status, reason, study id, bytes)."""
        allowed_host = self._hosts.get(calling)
        if allowed_host is not None and ev.assoc.requestor.address != allowed_host:
            return NOT_AUTHORISED, "calling host does not match the source", None, 0
        req = ev.request
        if not (is_valid_uid(req.AffectedSOPInstanceUID) and is_valid_uid(req.AffectedSOPClassUID)):
            return NOT_MATCHING_SOP_CLASS, "malformed Affected SOP Class/Instance UID in the request", None, 0
        syntax = str(ev.context.transfer_syntax)
        try:
            with req.DataSet.getbuffer() as encoded_view:
                n_encoded = len(encoded_view)
                check_dataset_bytes(encoded_view, syntax, self.limits)
        except UnsafeDicom as exc:
            return CANNOT_UNDERSTAND, f"data set refused: {exc}", None, 0
        try:
            ds = ev.dataset
            check_complete(ds, n_encoded, syntax)
            for _ in ds.iterall():  # convert every element now: corrupt values fail here
                pass
            sop_class = ds.get("SOPClassUID")
            sop_uid = ds.get("SOPInstanceUID")
            study_uid = ds.get("StudyInstanceUID")
            series_uid = ds.get("SeriesInstanceUID")
        except Exception as exc:
            return CANNOT_UNDERSTAND, f"data set cannot be decoded ({type(exc).__name__})", None, 0
        if not all(is_valid_uid(u) for u in (sop_uid, study_uid, sop_class, series_uid)):
            return NOT_MATCHING_SOP_CLASS, "missing or malformed SOP, Study or Series UID", None, 0
        if sop_class != req.AffectedSOPClassUID or sop_uid != req.AffectedSOPInstanceUID:
            return NOT_MATCHING_SOP_CLASS, "data set UIDs differ from the C-STORE request", None, 0
        if self.store.free_mb() < self.cfg.min_free_mb:
            return OUT_OF_RESOURCES, f"less than {self.cfg.min_free_mb} MiB free", None, 0
        key = study_key(calling, study_uid)
        try:
            encoded = ev.encoded_dataset()
            stored = self.store.put(key, sop_uid, encoded)
        except OSError as exc:
            if exc.errno in NO_SPACE_ERRNOS:
                return OUT_OF_RESOURCES, "no space left on the store", None, 0
            return OUT_OF_RESOURCES, f"store write failed ({exc.strerror})", None, 0
        try:
            added = self.queue.add_instance(key, calling, study_uid, sop_uid, sop_class, stored.path)
        except Exception as exc:
            if stored.created:
                stored.path.unlink(missing_ok=True)
            return OUT_OF_RESOURCES, f"queue write failed ({type(exc).__name__})", None, 0
        if added.new_study:
            self.metrics.inc("uar_node_studies_received_total")
            event(
                "study_opened",
                study=uid_hash(study_uid),
                calling_ae=safe_ae(calling),
                study_id=added.study_id,
            )
        return 0x0000, "", added.study_id, len(encoded)


def check_complete(ds: Dataset, n_bytes: int, transfer_syntax: str) -> None:
    """Raise ``ValueError`` if the decoded data set is shorter than its encoding says.

    pydicom stops silently at the end of a truncated stream; here every top-level element with a
    defined length must hold that many bytes, and (unless deflated) the last one, with the sequence
    delimiter of an undefined length, must end exactly at the end of the received ``n_bytes``.
    """
    last = None
    for tag in list(ds.keys()):  # tags; iterating a Dataset would convert its elements
        elem = ds.get_item(tag)
        defined = isinstance(elem, RawDataElement) and elem.length != UNDEFINED_LENGTH
        if defined and elem.value is not None and len(elem.value) != elem.length:
            raise ValueError("element value shorter than its length")
        last = elem
    if last is None:
        raise ValueError("empty data set")
    if transfer_syntax != DeflatedExplicitVRLittleEndian and isinstance(last, RawDataElement):
        # an undefined-length value (encapsulated pixel data, sequence) is followed by its 8-byte delimiter
        size = last.length if last.length != UNDEFINED_LENGTH else len(last.value or b"") + 8
        if last.value_tell + size != n_bytes:
            raise ValueError("data set does not end where its last element ends")


def echo(host: str, port: int, called_ae: str, calling_ae: str = "UARECHO", timeout_s: float = 10.0) -> int:
    """Send C-ECHO to ``host:port``; returns the status (0 = success) or -1 if no association."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return -1
    try:
        status: Any = assoc.send_c_echo()
        return int(status.Status) if status else -1
    finally:
        assoc.release()
