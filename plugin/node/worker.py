"""App workers: separate processes that load the model once and run the app per study.

:class:`WorkerPool` (in the node process) starts ``cfg.workers`` processes with the ``spawn``
method, hands each idle one a study, and supervises them: a run longer than
``study_timeout_s`` is killed (the process is restarted) and reported as a failure, as is a worker
that dies mid-run. A worker whose model cannot load reports it and is restarted after a pause,
leaving studies queued: the node itself never crashes because of the app.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from plugin.node.log import event, setup_logging
from plugin.node.queue import Job
from uar.heap import fix_mmap_threshold

HOLOSCAN_STACK_BYTES = 32 * 2**20  # stack size Holoscan asks for
MODEL_RETRY_S = 30.0  # pause before restarting a worker whose model failed to load
_MAX_REASON = 300  # characters of an exception message kept as a failure reason


PARENT_POLL_S = 0.2  # how often a worker checks that the node process is still alive


def _reason(exc: BaseException, *, with_text: bool = True) -> str:
    """A failure reason; ``with_text=False`` for runs on received data (the text can quote values)."""
    if not with_text:
        return f"{type(exc).__name__} in the app"
    return f"{type(exc).__name__}: {exc}"[:_MAX_REASON]


def _die_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the node process is gone (e.g. after ``kill -9``).

    Linux ``PR_SET_PDEATHSIG`` fires when the *thread* that started the worker ends (the node's
    scheduler thread), so a watch thread on ``os.getppid()`` is used instead: it works whatever
    thread spawned the worker and needs no platform call.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _raise_stack_limit(n_bytes: int) -> None:
    """Raise the soft stack limit of this process (Holoscan recommends 32 MiB; Linux default 8 MiB)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and soft < n_bytes:
        target = n_bytes if hard == resource.RLIM_INFINITY else min(n_bytes, hard)
        resource.setrlimit(resource.RLIMIT_STACK, (target, hard))


def _send(conn: Connection, msg: tuple[Any, ...]) -> bool:
    """Send ``msg`` to the node; False if the node is gone (then the worker just ends)."""
    try:
        conn.send(msg)
    except OSError:
        return False
    return True


def worker_main(
    conn: Connection,
    model_path: str | None,
    app: dict[str, Any] | None,
    log_format: str,
    parent_pid: int | None = None,
) -> None:
    """Body of a worker process: load the generator once, then run ``run_app`` per received job.

    Messages to the parent: ``("ready", pid)``, ``("fatal", reason)``, ``("ok", study_id, srs,
    pdfs, rejections, seconds, verdicts, maps)`` (``verdicts``: the input-domain verdict of each study
    the model read; ``maps``: the attention-map Secondary Captures), ``("error", study_id, reason,
    seconds)``. A ``None`` job ends it.
    The worker ends by itself when ``parent_pid`` (the node) is gone.
    """
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    setup_logging(log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when workers stop
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR")  # keep the node's log structured
    _raise_stack_limit(HOLOSCAN_STACK_BYTES)
    fix_mmap_threshold()  # steady memory over many studies (uar/heap.py)
    try:
        from plugin.runner import run_app
        from plugin.settings import AppSettings
        from uar.generator import ReportGenerator

        settings = AppSettings.from_dict(app)
        generator = ReportGenerator.load(model_path)
    except Exception as exc:
        _send(conn, ("fatal", _reason(exc)))
        return
    if not _send(conn, ("ready", os.getpid())):
        return
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        study_id, in_dir, out_dir = job
        t0 = time.monotonic()
        try:
            result = run_app(in_dir, out_dir, generator=generator, settings=settings)
            rejections = [str(getattr(r, "reason", r)) for r in result.rejections]
            msg: tuple[Any, ...] = (
                "ok",
                study_id,
                [str(p) for p in result.srs],
                [str(p) for p in getattr(result, "pdfs", [])],
                rejections,
                time.monotonic() - t0,
                list(getattr(result, "verdicts", [])),
                [str(p) for p in getattr(result, "maps", [])],
            )
        except Exception as exc:
            msg = ("error", study_id, _reason(exc, with_text=False), time.monotonic() - t0)
        if not _send(conn, msg):
            return


@dataclass
class WorkerResult:
    """What became of one job: kind is "ok", "error", "timeout" or "crash"."""

    job: Job
    kind: str
    srs: list[Path] = field(default_factory=list)
    pdfs: list[Path] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0
    verdicts: list[str] = field(default_factory=list)  # input-domain verdicts (uar.ood)
    maps: list[Path] = field(default_factory=list)  # attention-map Secondary Captures (write_maps)


class Runner(Protocol):
    """What :func:`finish_running` needs of a pool of app runners (workers or MAP containers)."""

    def busy(self) -> int: ...

    def poll(self) -> list[WorkerResult]: ...


def finish_running(runner: Runner, grace_s: float) -> list[WorkerResult]:
    """Poll ``runner`` until nothing runs or ``grace_s`` seconds pass; the finished results
    ("ok" and "error") that arrived meanwhile."""
    deadline = time.monotonic() + grace_s
    results: list[WorkerResult] = []
    while runner.busy() and time.monotonic() < deadline:
        results += [r for r in runner.poll() if r.kind in ("ok", "error")]
        time.sleep(0.05)
    return results


@dataclass
class _Slot:
    proc: Any = None  # multiprocessing.Process
    conn: Connection | None = None
    ready: bool = False
    job: Job | None = None
    started: float = 0.0
    not_before: float = 0.0  # earliest (re)start time


class WorkerPool:
    """Supervisor of the worker processes; :meth:`poll` is called from the node's scheduler loop."""

    def __init__(
        self,
        n: int,
        model_path: str | None,
        app: dict[str, Any] | None,
        log_format: str,
        study_timeout_s: float,
    ) -> None:
        self.args = (model_path, app, log_format)
        self.study_timeout_s = study_timeout_s
        self.slots = [_Slot() for _ in range(n)]
        self.ctx = mp.get_context("spawn")
        self.last_fatal: str | None = None

    def _start(self, slot: _Slot) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(
            target=worker_main, args=(child, *self.args, os.getpid()), name="uar-worker", daemon=True
        )
        proc.start()
        child.close()
        slot.proc, slot.conn, slot.ready, slot.job = proc, parent, False, None

    def _kill(self, slot: _Slot) -> None:
        if slot.proc is not None and slot.proc.is_alive():
            slot.proc.kill()
        if slot.proc is not None:
            slot.proc.join(5)
        if slot.conn is not None:
            slot.conn.close()
        slot.proc, slot.conn, slot.ready = None, None, False

    def poll(self) -> list[WorkerResult]:
        """Start missing workers, collect finished jobs, kill stuck or dead ones; returns finished jobs."""
        now = time.monotonic()
        results: list[WorkerResult] = []
        for slot in self.slots:
            if slot.proc is None:
                if now >= slot.not_before:
                    try:
                        self._start(slot)
                    except Exception as exc:
                        self.last_fatal = _reason(exc)
                        slot.not_before = now + MODEL_RETRY_S
                        event("worker_start_error", logging.ERROR, reason=self.last_fatal)
                continue
            try:
                while slot.conn is not None and slot.conn.poll():
                    results += self._message(slot, slot.conn.recv())
            except (EOFError, OSError):
                pass
            if slot.proc is None:
                continue
            if slot.job is not None and now - slot.started > self.study_timeout_s:
                results.append(
                    WorkerResult(slot.job, "timeout", reason=f"run exceeded {self.study_timeout_s:g} s")
                )
                event("worker_killed", logging.WARNING, study_id=slot.job.study_id, reason="timeout")
                slot.job = None
                self._kill(slot)
            elif not slot.proc.is_alive():
                code = slot.proc.exitcode
                if slot.job is not None:
                    results.append(WorkerResult(slot.job, "crash", reason=f"worker exited with code {code}"))
                    slot.job = None
                self._kill(slot)
                if not self.last_fatal:
                    event("worker_exited", logging.WARNING, code=code)
        return results

    def _message(self, slot: _Slot, msg: tuple[Any, ...]) -> list[WorkerResult]:
        kind = msg[0]
        if kind == "ready":
            slot.ready = True
            self.last_fatal = None
            event("worker_ready", pid=msg[1])
            return []
        if kind == "fatal":
            self.last_fatal = msg[1]
            event("worker_model_error", logging.ERROR, reason=msg[1], retry_s=MODEL_RETRY_S)
            self._kill(slot)
            slot.not_before = time.monotonic() + MODEL_RETRY_S
            return []
        job, slot.job = slot.job, None
        if job is None or job.study_id != msg[1]:
            return []
        if kind == "ok":
            _, _, srs, pdfs, rejections, seconds, verdicts, maps = msg
            return [
                WorkerResult(
                    job,
                    "ok",
                    [Path(p) for p in srs],
                    [Path(p) for p in pdfs],
                    rejections,
                    "",
                    seconds,
                    list(verdicts),
                    [Path(p) for p in maps],
                )
            ]
        return [WorkerResult(job, "error", reason=msg[2], seconds=msg[3])]

    def idle(self) -> list[int]:
        """Indices of workers that are loaded and have no job."""
        return [i for i, s in enumerate(self.slots) if s.ready and s.job is None and s.conn is not None]

    def submit(self, index: int, job: Job, in_dir: Path, out_dir: Path) -> None:
        """Give ``job`` to worker ``index`` (one of :meth:`idle`)."""
        slot = self.slots[index]
        if slot.conn is None:
            raise RuntimeError(f"worker {index} is not running")
        try:
            slot.conn.send((job.study_id, str(in_dir), str(out_dir)))
        except OSError:
            self._kill(slot)
            raise
        slot.job, slot.started = job, time.monotonic()

    def busy(self) -> int:
        """Number of workers running a job."""
        return sum(s.job is not None for s in self.slots)

    def stop(self, grace_s: float) -> tuple[list[WorkerResult], list[Job]]:
        """Let running jobs finish for up to ``grace_s`` seconds, then stop every worker.

        Returns (results that arrived, jobs still unfinished and killed).
        """
        results = finish_running(self, grace_s)
        unfinished = [s.job for s in self.slots if s.job is not None]
        for slot in self.slots:
            if slot.conn is not None and slot.job is None and slot.proc is not None and slot.proc.is_alive():
                with contextlib.suppress(OSError):
                    slot.conn.send(None)
                slot.proc.join(2)
            slot.job = None
            self._kill(slot)
            slot.not_before = float("inf")
        return results, unfinished
