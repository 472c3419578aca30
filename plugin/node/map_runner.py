"""MAP runner: the node hands each study to the MONAI Application Package image (``runner: map``).

The way a MONAI Deploy workflow manager runs MAPs: one container per study, ``docker run --rm
--network none --read-only`` with the study's instances mounted read-only at
``/var/holoscan/input`` and the run's work folder at ``/var/holoscan/output`` (the MAP's
``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH``); ``/tmp`` is a small tmpfs. :class:`MapPool`
has the interface of :class:`plugin.node.worker.WorkerPool`, so the scheduler, the timeout
(``study_timeout_s``: the container is removed), the retries (``max_attempts``) and the rejection
rules are the in-process runner's. What the app wrote is read back from the output folder:
``SR_*.dcm``, ``PDF_*.dcm`` and ``rejection_*.json``.

The container runs as the node's own user (so it reads the stored instances, mode 0640, and the
node owns what it writes); a node running as root runs it as the image's ``holoscan`` user
(:data:`ROOT_NODE_CONTAINER_USER`) with the node's group added and the work folder handed over,
never as root. It gets no capabilities and no new privileges. A configured ``model_path`` is
copied once into the pool's own folder, readable by that user, and mounted read-only. Until the
model is staged and ``docker image inspect`` finds the image (or while the daemon cannot be
reached) the pool takes no studies and retries every :data:`plugin.node.worker.MODEL_RETRY_S`
seconds, as a worker whose model cannot load does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from plugin.node.config import NodeConfig
from plugin.node.log import event
from plugin.node.queue import Job
from plugin.node.worker import HOLOSCAN_STACK_BYTES, MODEL_RETRY_S, WorkerResult, finish_running
from plugin.settings import SETTINGS_KEY, AppSettings

MAP_INPUT = "/var/holoscan/input"  # HOLOSCAN_INPUT_PATH of the MAP (app.json: WORKDIR + "input/")
MAP_OUTPUT = "/var/holoscan/output"
MAP_CONFIG = "/var/holoscan/app.yaml"  # HOLOSCAN_CONFIG_PATH
MAP_MODEL_OVERRIDE = "/var/holoscan/model-override"  # where a configured model_path is mounted
ROOT_NODE_CONTAINER_USER = (1000, 1000)  # the image's holoscan user (scripts/map/Dockerfile UID/GID)
TMPFS = "/tmp:rw,nosuid,nodev,size=256m"
DOCKER_CALL_TIMEOUT_S = 60.0  # image inspect / container removal
_MAX_REASON = 300  # characters of a failure reason
_EXCEPTION_RE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt|Exit)\b:? .*$", re.M)


@dataclass
class _MapSlot:
    job: Job | None = None
    proc: subprocess.Popen[bytes] | None = None  # the `docker run` client of the running container
    container: str = ""
    out_dir: Path | None = None
    log: IO[bytes] | None = None
    started: float = 0.0


class MapPool:
    """Runs up to ``n`` MAP containers at once; :meth:`poll` is called from the node's scheduler loop."""

    def __init__(
        self,
        n: int,
        image: str,
        model_path: str | None,
        app: dict[str, Any] | None,
        study_timeout_s: float,
        docker_host: str | None = None,
        run_args: tuple[str, ...] = (),
    ) -> None:
        if app is not None:
            AppSettings.from_dict(app)  # a typo fails at node start, not once per study
        self.image = image
        self.model_source = Path(model_path).resolve() if model_path else None
        self.model_path: Path | None = None  # the staged copy the containers mount
        self.study_timeout_s = study_timeout_s
        self.run_args = tuple(run_args)
        self.slots = [_MapSlot() for _ in range(n)]
        self.ready = False  # the model is staged and the image was found
        self.not_before = 0.0  # earliest next readiness check
        self.last_fatal: str | None = None
        self.env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
        self._dir = Path(tempfile.mkdtemp(prefix="uar-map-"))  # run logs and the app config
        self._config: Path | None = None
        if app is not None:
            self._config = self._dir / "app.yaml"
            self._config.write_text(yaml.safe_dump({SETTINGS_KEY: app}), encoding="utf-8")
            self._config.chmod(0o644)

    @classmethod
    def from_config(cls, cfg: NodeConfig) -> MapPool:
        """The pool of a node configured with ``runner: map``."""
        if not cfg.map_image:
            raise ValueError("runner 'map' needs map_image")
        return cls(
            cfg.workers,
            cfg.map_image,
            cfg.model_path,
            cfg.app_settings or None,  # None: the image's own app.yaml
            cfg.study_timeout_s,
            cfg.map_docker_host,
            cfg.map_run_args,
        )

    # --- docker ------------------------------------------------------------------------------------
    def _docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DOCKER_CALL_TIMEOUT_S,
            check=False,
        )

    def _stage_model(self, source: Path) -> Path:
        """Copy the configured model into the pool's folder, readable by the container's user.

        The node's own files need not be (a checkpoint written with mode 0600 by root is not
        readable by the image's user); the copy is made once per pool.
        """
        target = self._dir / "model" / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir()
            shutil.copyfile(source, target)
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return target

    def _check_ready(self) -> None:
        """Stage the model (once) and look the image up; on failure, retry after a pause."""
        problem = ""
        if self.model_source is not None and self.model_path is None:
            try:
                self.model_path = self._stage_model(self.model_source)
            except OSError as exc:
                shutil.rmtree(self._dir / "model", ignore_errors=True)
                problem = f"model {self.model_source} not usable: {type(exc).__name__}: {exc}"
        if not problem:
            try:
                proc = self._docker("image", "inspect", "--format", "{{.Id}}", self.image)
                if proc.returncode != 0:
                    error = _last_line(proc.stderr) or f"exit {proc.returncode}"
                    problem = f"MAP image {self.image} not available: {error}"
            except (OSError, subprocess.TimeoutExpired) as exc:
                problem = f"MAP image {self.image} not available: {type(exc).__name__}: {exc}"
        if not problem:
            self.ready, self.last_fatal = True, None
            event("map_image_ready", image=self.image)
            return
        self.ready = False
        self.last_fatal = problem[:_MAX_REASON]
        self.not_before = time.monotonic() + MODEL_RETRY_S
        event("map_not_ready", logging.ERROR, reason=self.last_fatal, retry_s=MODEL_RETRY_S)

    def _remove(self, slot: _MapSlot) -> None:
        """Remove the slot's container (killing it) and reap its ``docker run`` client."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._docker("rm", "-f", slot.container)
        if slot.proc is not None:
            try:
                slot.proc.wait(10)
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                slot.proc.wait()

    def _user_args(self, out_dir: Path) -> list[str]:
        """``--user`` (and ``--group-add``) for the container; hands ``out_dir`` over when root."""
        uid, gid = os.getuid(), os.getgid()
        if uid != 0:
            return ["--user", f"{uid}:{gid}"]
        c_uid, c_gid = ROOT_NODE_CONTAINER_USER
        os.chown(out_dir, c_uid, c_gid)
        return ["--user", f"{c_uid}:{c_gid}", "--group-add", str(gid)]

    def command(self, container: str, in_dir: Path, out_dir: Path) -> list[str]:
        """The ``docker run`` command line of one study."""
        cmd = [
            "docker",
            "run",
            "--rm",
            "--name",
            container,
            "--label",
            "org.uar.node.run=1",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            TMPFS,
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--ulimit",
            f"stack={HOLOSCAN_STACK_BYTES}",
            *self._user_args(out_dir),
            "-v",
            f"{in_dir.resolve()}:{MAP_INPUT}:ro",
            "-v",
            f"{out_dir.resolve()}:{MAP_OUTPUT}",
        ]
        if self._config is not None:
            cmd += ["-v", f"{self._config}:{MAP_CONFIG}:ro"]
        app_args: list[str] = []
        if self.model_path is not None:
            target = MAP_MODEL_OVERRIDE
            if self.model_path.is_file():
                target = f"{MAP_MODEL_OVERRIDE}/{self.model_path.name}"
            cmd += ["-v", f"{self.model_path}:{target}:ro"]
            app_args = ["-m", target]
        return [*cmd, *self.run_args, self.image, *app_args]

    # --- the WorkerPool interface -----------------------------------------------------------------
    def poll(self) -> list[WorkerResult]:
        """Check model and image when needed, collect finished containers, remove overdue ones."""
        now = time.monotonic()
        if not self.ready and now >= self.not_before:
            self._check_ready()
        results: list[WorkerResult] = []
        for slot in self.slots:
            if slot.job is None or slot.proc is None:
                continue
            code = slot.proc.poll()
            if code is None and now - slot.started > self.study_timeout_s:
                event("map_container_killed", logging.WARNING, study_id=slot.job.study_id, reason="timeout")
                self._remove(slot)
                results.append(
                    self._finish(slot, "timeout", reason=f"run exceeded {self.study_timeout_s:g} s")
                )
            elif code is not None:
                results.append(self._collect(slot, code))
        return results

    def _collect(self, slot: _MapSlot, code: int) -> WorkerResult:
        """The outcome of a container that exited with ``code``."""
        assert slot.out_dir is not None
        if code == 0:
            out = slot.out_dir
            rejections = [_rejection_reason(p) for p in sorted(out.glob("rejection_*.json"))]
            srs, pdfs = sorted(out.glob("SR_*.dcm")), sorted(out.glob("PDF_*.dcm"))
            maps = sorted(out.glob("SC_*.dcm"))
            return self._finish(slot, "ok", srs=srs, pdfs=pdfs, maps=maps, rejections=rejections)
        tail = self._log_tail(slot)
        if code in (125, 126, 127):  # docker itself failed: check the image before the next study
            self.ready, self.not_before = False, 0.0
            return self._finish(slot, "error", reason=f"docker run failed (exit {code}): {tail}")
        if code in (137, 139):
            what = "killed (SIGKILL: out of memory?)" if code == 137 else "crashed (SIGSEGV)"
            return self._finish(slot, "crash", reason=f"MAP container {what}")
        return self._finish(slot, "error", reason=f"MAP container exited with code {code}: {tail}")

    def _finish(self, slot: _MapSlot, kind: str, **fields: Any) -> WorkerResult:
        assert slot.job is not None
        if "reason" in fields:
            fields["reason"] = fields["reason"][:_MAX_REASON]
        result = WorkerResult(slot.job, kind, seconds=time.monotonic() - slot.started, **fields)
        if slot.log is not None:
            slot.log.close()
            Path(slot.log.name).unlink(missing_ok=True)
        slot.job, slot.proc, slot.log, slot.out_dir = None, None, None, None
        return result

    def _log_tail(self, slot: _MapSlot) -> str:
        """The app's exception (``SomeError: message``, as the in-process runner reports it) from the
        end of what the container printed, else its last line."""
        if slot.log is None:
            return ""
        slot.log.flush()
        with open(slot.log.name, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
            text = f.read().decode("utf-8", "replace")
        errors = _EXCEPTION_RE.findall(text)
        return errors[-1].strip() if errors else _last_line(text)

    def idle(self) -> list[int]:
        """Indices of slots that can take a study (none until the image is found)."""
        if not self.ready:
            return []
        return [i for i, s in enumerate(self.slots) if s.job is None]

    def submit(self, index: int, job: Job, in_dir: Path, out_dir: Path) -> None:
        """Start the container of ``job`` in slot ``index`` (one of :meth:`idle`)."""
        slot = self.slots[index]
        if slot.job is not None:
            raise RuntimeError(f"MAP slot {index} is busy")
        container = f"uar-study-{job.study_id}-{uuid.uuid4().hex[:8]}"
        cmd = self.command(container, in_dir, out_dir)
        log = open(self._dir / f"{container}.log", "wb")  # noqa: SIM115 - closed in _finish
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        except BaseException:
            log.close()
            raise
        slot.job, slot.proc, slot.container, slot.out_dir, slot.log = job, proc, container, out_dir, log
        slot.started = time.monotonic()
        event("map_container_started", study_id=job.study_id, container=container)

    def busy(self) -> int:
        """Number of running containers."""
        return sum(s.job is not None for s in self.slots)

    def stop(self, grace_s: float) -> tuple[list[WorkerResult], list[Job]]:
        """Let running containers finish for up to ``grace_s`` seconds, then remove the rest.

        Returns (results that arrived, jobs still unfinished and killed).
        """
        results = finish_running(self, grace_s)
        unfinished = []
        for slot in self.slots:
            if slot.job is not None:
                unfinished.append(slot.job)
                self._remove(slot)
                self._finish(slot, "error")
        self.ready, self.not_before = False, float("inf")
        shutil.rmtree(self._dir, ignore_errors=True)
        return results, unfinished


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _rejection_reason(path: Path) -> str:
    """The ``reason`` of a rejection record the app wrote (operators.study_loader.write_rejection)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return str(record["reason"])[:_MAX_REASON]
    except (OSError, ValueError, KeyError, TypeError):
        return "rejected (unreadable rejection record)"
