"""Export of SR (and PDF) instances to the configured destinations: DIMSE C-STORE or DICOMweb STOW-RS.

One thread per destination. Each round it takes the due pending deliveries of that destination
from the queue and sends each study's outputs together, then records each result. Delivery state
lives in SQLite, so a restart never re-sends what a destination has confirmed.

* DIMSE (:class:`~plugin.node.config.Destination`): **one association per study**. Success or a
  storage warning (0xB000, 0xB006, 0xB007) marks the delivery done; a refused association, a lost
  connection, no response or any failure status schedules a retry.
* DICOMweb (:class:`~plugin.node.config.DicomWebDestination`): **one STOW-RS request per study**
  (:mod:`plugin.node.stow`). An instance in the response's FailedSOPSequence is retried (that
  instance only); the others are delivered. No answer (connection refused or reset, TLS failure,
  timeout) or HTTP 408, 429, 5xx retries the whole study; any other status too (e.g. 401 after a
  token expired), with the status in the reason.

Retries use exponential backoff (``export_backoff_s`` doubled per attempt, at most
``export_backoff_max_s``) until ``export_deadline_s``.
"""

from __future__ import annotations

import logging
import threading
import time

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from plugin.node.config import Destination, DicomWebDestination, NodeConfig
from plugin.node.log import event
from plugin.node.metrics import Metrics
from plugin.node.queue import Delivery, JobQueue
from plugin.node.stow import stow

STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


class Exporter:
    """Sends pending deliveries to one destination until stopped."""

    def __init__(
        self, cfg: NodeConfig, dest: Destination | DicomWebDestination, queue: JobQueue, metrics: Metrics
    ) -> None:
        self.cfg = cfg
        self.dest = dest
        self.queue = queue
        self.metrics = metrics
        self.wake = threading.Event()  # set when new deliveries were queued
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"export-{dest.name}", daemon=True)

    def start(self) -> None:
        """Start the export thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the association in progress (if any) and wait for the thread."""
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                due = self.queue.due_deliveries(self.dest.name)
                for items in due.values():
                    if self._stop.is_set():
                        break
                    self.send_study(items)
                nxt = self.queue.next_delivery_time(self.dest.name)
            except Exception as exc:  # the export loop must survive anything (e.g. a locked DB)
                event(
                    "export_loop_error", logging.ERROR, destination=self.dest.name, error=type(exc).__name__
                )
                nxt = None
            wait = 1.0 if nxt is None else min(max(nxt - time.time(), 0.0), 1.0)
            if wait > 0:
                self.wake.wait(wait)
            self.wake.clear()

    def _ae(self) -> AE:
        ae = AE(ae_title=self.cfg.scu_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.cfg.export_timeout_s
        ae.connection_timeout = self.cfg.export_timeout_s
        ae.maximum_pdu_size = self.cfg.max_pdu
        return ae

    def send_study(self, items: list[Delivery]) -> int:
        """Send one study's pending outputs (one association or one STOW request); returns how many
        were confirmed."""
        if isinstance(self.dest, DicomWebDestination):
            return self._stow_study(self.dest, items)
        return self._store_study(self.dest, items)

    def _stow_study(self, dest: DicomWebDestination, items: list[Delivery]) -> int:
        try:
            result = stow(dest, [d.path for d in items], self.cfg.export_timeout_s)
        except OSError as exc:  # an output file cannot be read
            for d in items:
                self._retry(d, f"cannot read the output ({type(exc).__name__})")
            return 0
        if result.retry_all or result.error:
            why = f"HTTP {result.status}" if result.status is not None else "no HTTP response"
            why += f" ({result.error})" if result.error else ""
            for d in items:
                self._retry(d, why)
            return 0
        delivered = 0
        for d in items:
            if d.sop_uid in result.failed:
                reason = result.failed[d.sop_uid]
                code = f"0x{reason:04X}" if reason is not None else "no reason given"
                self._retry(d, f"STOW FailedSOPSequence, FailureReason {code}")
            elif d.sop_uid in result.stored or result.status == 200:
                self._delivered(d)
                delivered += 1
            else:
                self._retry(d, f"HTTP {result.status}, instance not confirmed in the STOW response")
        return delivered

    def _store_study(self, dest: Destination, items: list[Delivery]) -> int:
        ae = self._ae()
        for sop_class in sorted({d.sop_class for d in items}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls_args = (self.cfg.tls.client_context(), None) if self.cfg.tls else None
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "no association (connection failed)"
            for d in items:
                self._retry(d, why)
            return 0
        delivered = 0
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        try:
            for d in items:
                if not assoc.is_established:
                    self._retry(d, "association lost")
                    continue
                if d.sop_class not in accepted:
                    # e.g. a PACS configured for SR but not for the attention maps' Secondary Capture
                    name = UID(d.sop_class).name
                    self._retry(d, f"the destination did not accept {name} in this association")
                    continue
                try:
                    status = assoc.send_c_store(d.path)
                except Exception as exc:
                    self._retry(d, f"send failed ({type(exc).__name__})")
                    continue
                code = int(status.Status) if status and "Status" in status else None
                if code in STORED_STATUSES:
                    self._delivered(d)
                    delivered += 1
                elif code is None:
                    self._retry(d, "no C-STORE response (timeout or abort)")
                else:
                    self._retry(d, f"C-STORE status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()
        return delivered

    def _delivered(self, d: Delivery) -> None:
        self.queue.mark_delivered(d.output_id, self.dest.name)
        self.metrics.inc("uar_node_exports_total", destination=self.dest.name)
        latency = time.time() - d.first_received
        self.metrics.observe("uar_node_study_latency_seconds", latency, destination=self.dest.name)
        event(
            "export_delivered",
            destination=self.dest.name,
            study_id=d.study_id,
            output_id=d.output_id,
            attempt=d.attempts + 1,
            latency_s=round(latency, 3),
        )

    def _retry(self, d: Delivery, why: str) -> None:
        state = self.queue.mark_retry(
            d.output_id, self.dest.name, why, self.cfg.export_backoff_s, self.cfg.export_backoff_max_s
        )
        self.metrics.inc(
            "uar_node_export_failures_total", destination=self.dest.name, final=str(state == "failed").lower()
        )
        level = logging.ERROR if state == "failed" else logging.WARNING
        event(
            "export_gave_up" if state == "failed" else "export_retry",
            level,
            destination=self.dest.name,
            study_id=d.study_id,
            output_id=d.output_id,
            attempt=d.attempts + 1,
            reason=why,
        )
