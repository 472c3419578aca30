"""The node process: SCP + scheduler + worker pool + exporters + metrics, with restart recovery.

``NodeService(cfg).start()`` recovers the queue (studies left running are re-queued, idle timers
restart, pending deliveries resume), then starts everything. :meth:`NodeService.stop` is the
graceful shutdown used on SIGTERM / SIGINT: stop accepting associations, let open ones finish
for a moment, let running studies finish for ``shutdown_grace_s`` (the rest are re-queued, not
lost), stop the exporters after their current association.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pydicom

from plugin.node.config import NodeConfig
from plugin.node.exporter import Exporter
from plugin.node.log import event
from plugin.node.map_runner import MapPool
from plugin.node.metrics import Labels, Metrics, MetricsServer
from plugin.node.queue import INPUT_DOMAIN_EVENT, Job, JobQueue
from plugin.node.scp import StorageSCP
from plugin.node.store import InstanceStore, make_dirs
from plugin.node.worker import WorkerPool, WorkerResult

TICK_S = 0.1  # scheduler period
ERROR_LOG_EVERY_S = 10.0  # a failing scheduler step is logged at most once per this period


class NodeService:
    """One running DICOM node."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self._lock_fd = _lock_storage(cfg.storage)
        self.store = InstanceStore(cfg.storage)
        self.queue = JobQueue(self.store.db_path)
        self.metrics = Metrics(gauge_fn=self._gauges)
        self.scp = StorageSCP(cfg, self.store, self.queue, self.metrics)
        self.pool: WorkerPool | MapPool = (
            MapPool.from_config(cfg)
            if cfg.runner == "map"
            else WorkerPool(
                cfg.workers, cfg.model_path, cfg.app_settings, cfg.log_format, cfg.study_timeout_s
            )
        )
        self.exporters = [Exporter(cfg, d, self.queue, self.metrics) for d in cfg.destinations]
        self.metrics_server = (
            MetricsServer(self.metrics, cfg.metrics_bind, cfg.metrics_port) if cfg.metrics_port else None
        )
        self._outbox: dict[int, Path] = {}  # study id -> outbox folder of its running job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover the queue and start listening, scheduling, exporting and serving metrics."""
        recovered = self.queue.recover()
        event("node_starting", storage=str(self.store.root), **recovered)
        self.scp.start()
        for exporter in self.exporters:
            exporter.start()
        if self.metrics_server is not None:
            self.metrics_server.start()
            event("metrics_listening", bind=self.cfg.metrics_bind, port=self.metrics_server.port)
        self._thread.start()

    def stop(self) -> None:
        """Graceful shutdown: nothing acknowledged is lost, in-flight work finishes or is re-queued.

        Every step runs even when an earlier one fails (e.g. SQLite "database or disk is full"):
        what could not be recorded is recovered at the next start from the queue's last state.
        """
        event("node_stopping")
        failures: list[str] = []

        def step(name: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as exc:
                failures.append(name)
                event("shutdown_step_failed", logging.ERROR, step=name, error=type(exc).__name__)

        step("stop_accepting", self.scp.stop_accepting)
        step("drain_associations", self._drain_associations)
        self._stop.set()
        step("scheduler", self._thread.join)
        outcome: dict[str, tuple[list[WorkerResult], list[Job]]] = {}
        step("workers", lambda: outcome.setdefault("pool", self.pool.stop(self.cfg.shutdown_grace_s)))
        results, unfinished = outcome.get("pool", ([], []))
        for result in results:
            step("record_result", lambda result=result: self._handle(result))
        for job in unfinished:
            step("requeue", lambda job=job: self.queue.requeue(job.study_id, "node shut down during the run"))
        for exporter in self.exporters:
            step("exporter", exporter.stop)
        if self.metrics_server is not None:
            step("metrics", self.metrics_server.stop)
        step("queue", self.queue.close)
        step("lock", lambda: os.close(self._lock_fd))
        event("node_stopped", requeued=len(unfinished), failed_steps=len(failures))

    def _drain_associations(self) -> None:
        """Give open associations a moment to finish, then abort the rest."""
        deadline = time.monotonic() + min(self.cfg.shutdown_grace_s, 10.0)
        while self.scp.open_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.scp.abort_all()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then :meth:`stop`."""
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            event("signal", name=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not stop.wait(0.5):
            pass
        self.stop()

    # --- scheduling -------------------------------------------------------------------------------
    def _loop(self) -> None:
        last_logged, suppressed = -ERROR_LOG_EVERY_S, 0
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the scheduler must survive anything; the state is in SQLite
                now = time.monotonic()
                if now - last_logged >= ERROR_LOG_EVERY_S:  # a full disk fails every tick: rate-limit
                    event("scheduler_error", logging.ERROR, error=type(exc).__name__, suppressed=suppressed)
                    last_logged, suppressed = now, 0
                else:
                    suppressed += 1
            self._stop.wait(TICK_S)

    def tick(self) -> None:
        """One scheduler step: close idle studies, collect worker results, start queued studies."""
        for study_id in self.queue.promote_idle(self.cfg.idle_timeout_s, self.scp.busy_studies()):
            event("study_queued", study_id=study_id)
        for result in self.pool.poll():
            self._handle(result)
        for index in self.pool.idle():
            job = self.queue.claim_next()
            if job is None:
                break
            try:
                work, outbox = self.store.run_dirs(job.key, job.run)
                self._outbox[job.study_id] = outbox
                self.pool.submit(index, job, self.store.incoming_dir(job.key), work)
            except Exception as exc:  # e.g. a worker that died a moment ago, a full disk
                self._outbox.pop(job.study_id, None)
                self._failed(WorkerResult(job, "error"), f"could not start the run ({type(exc).__name__})")
                continue
            event("study_started", study_id=job.study_id, attempt=job.attempt, instances=job.n_instances)
        self._reconcile()

    def _reconcile(self) -> None:
        """Re-queue studies marked running that no worker is running (a safety net; none are expected)."""
        active = {s.job.study_id for s in self.pool.slots if s.job is not None}
        for row in self.queue.studies(["running"]):
            if row["id"] not in active:
                self.queue.requeue(row["id"], "no worker was running it")
                event(
                    "study_requeued", logging.WARNING, study_id=row["id"], reason="no worker was running it"
                )

    def _handle(self, r: WorkerResult) -> None:
        """Persist the outcome of one run (the only place study results are recorded)."""
        job = r.job
        outbox = self._outbox.pop(job.study_id, self.store.root / "outbox" / job.key / job.run)
        if r.kind == "ok":
            self.metrics.observe("uar_node_app_seconds", r.seconds)
            self._record_verdicts(job.study_id, r.verdicts)
        if r.kind == "ok" and r.srs:
            # attention maps first: a receiver that resolves the SR's IMAGE references has them by then
            files = [("sc", p) for p in r.maps] + [("sr", p) for p in r.srs] + [("pdf", p) for p in r.pdfs]
            try:
                accepted = self.store.accept_outputs([p for _, p in files], outbox)
                outputs = [(kind, dst, *_uids(dst)) for (kind, _), dst in zip(files, accepted, strict=True)]
            except Exception as exc:
                self._failed(r, f"cannot accept the app's output ({type(exc).__name__})")
                return
            state = self.queue.finish_done(
                job.study_id, outputs, [d.name for d in self.cfg.destinations], self.cfg.export_deadline_s
            )
            if r.rejections:
                self.queue.add_event(job.study_id, "rejection", "; ".join(r.rejections)[:1000])
            self.metrics.inc("uar_node_studies_processed_total", result="done")
            self.metrics.inc("uar_node_srs_produced_total", len(r.srs))
            event(
                "study_done",
                study_id=job.study_id,
                srs=len(r.srs),
                pdfs=len(r.pdfs),
                maps=len(r.maps),
                seconds=round(r.seconds, 3),
                state=state,
            )
            for exporter in self.exporters:
                exporter.wake.set()
        elif r.kind == "ok" and r.rejections:
            reason = "; ".join(r.rejections)[:1000]
            self.queue.finish_rejected(job.study_id, reason)
            self.metrics.inc("uar_node_studies_processed_total", result="rejected")
            event("study_rejected", logging.WARNING, study_id=job.study_id, reason=reason)
        elif r.kind == "ok":
            self._failed(r, "the app produced no SR and no rejection")
        else:
            self._failed(r, r.reason or r.kind)
        self.store.clean_work(job.key, job.run)

    def _record_verdicts(self, study_id: int, verdicts: list[str]) -> None:
        """Count the run's input-domain verdicts (metrics) and keep them in the study's history."""
        for verdict in verdicts:
            self.metrics.inc("uar_node_studies_by_input_domain_total", verdict=verdict)
            self.queue.add_event(study_id, INPUT_DOMAIN_EVENT, verdict)
        if any(v == "out_of_domain" for v in verdicts):
            event("study_out_of_domain", logging.WARNING, study_id=study_id)

    def _failed(self, r: WorkerResult, reason: str) -> None:
        job = r.job
        state = self.queue.finish_failed(job.study_id, reason, self.cfg.max_attempts, self.cfg.retry_delay_s)
        self.metrics.inc("uar_node_studies_processed_total", result="error")
        event(
            "study_run_failed",
            logging.WARNING,
            study_id=job.study_id,
            attempt=job.attempt,
            reason=reason,
            state=state,
        )
        if state == "failed":
            moved = self.store.move_to_failed(job.key)
            self.queue.add_event(job.study_id, "moved_to_failed", str(moved))
            self.metrics.inc("uar_node_studies_processed_total", result="failed")
            event("study_failed", logging.ERROR, study_id=job.study_id, folder=str(moved), reason=reason)

    def _gauges(self) -> dict[str, dict[Labels, float]]:
        q = JobQueue(self.store.db_path)
        try:
            return {
                "uar_node_queue_depth": {(("state", k),): float(v) for k, v in q.counts().items()},
                "uar_node_deliveries": {(("state", k),): float(v) for k, v in q.delivery_counts().items()},
            }
        finally:
            q.close()


def _lock_storage(storage: Path) -> int:
    """Take an exclusive ``flock`` on ``storage/node.lock`` (released when the process ends)."""
    make_dirs(storage.resolve())
    fd = os.open(storage / "node.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another node is already running on {storage}") from None
    return fd


def _uids(path: Path) -> tuple[str, str]:
    """(SOPInstanceUID, SOPClassUID) of an output file."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SOPClassUID"])
    return str(ds.SOPInstanceUID), str(ds.SOPClassUID)
