"""Structured logs for the node: one JSON object (or ``key=value`` line) per event, never any PHI.

Only values chosen by the node are logged: hashed UIDs (:func:`uid_hash`), sanitised AE titles,
counts, durations and reasons. Patient names, IDs and raw UIDs never reach a log record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import threading
import time
from typing import Any

LOGGER_NAME = "plugin.node"
log = logging.getLogger(LOGGER_NAME)


def uid_hash(uid: str) -> str:
    """First 12 hex digits of SHA-256 of a UID: stable for correlating logs, not reversible to the UID."""
    return hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:12]


def safe_ae(title: str) -> str:
    """AE title reduced to ``[A-Za-z0-9_.-]`` (max 16 characters), safe in logs and file names."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", title.strip())[:16]
    return cleaned or "_"


class _Formatter(logging.Formatter):
    """Render ``record.fields`` (set by :func:`event`) as JSON or ``key=value``."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", record.getMessage()),
        }
        data.update(getattr(record, "fields", {}))
        if self.fmt == "json":
            return json.dumps(data, default=str)
        return " ".join(f"{k}={_kv(v)}" for k, v in data.items())


def _kv(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=')) else text


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log event ``name`` with structured ``fields`` (callers pass only PHI-free values)."""
    text = " ".join([name, *(f"{k}={_kv(v)}" for k, v in fields.items())])
    log.log(level, "%s", text, extra={"event": name, "fields": fields})


class _LibraryHandler(logging.Handler):
    """Turns any other logger's record (pydicom, pynetdicom, highdicom, warnings) into a PHI-free event.

    Library messages quote received values (e.g. pydicom's "Invalid value for VR UI: '<value>'"),
    so only the logger name, the level and a digest of the message text are kept.
    """

    _busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(LOGGER_NAME) or getattr(self._busy, "on", False):
            return  # the node's own events (if propagated) and re-entrant calls
        self._busy.on = True
        try:
            try:
                text = record.getMessage()
            except Exception:
                text = str(record.msg)
            digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]
            event("library_log", record.levelno, source=record.name, digest=digest)
        finally:
            self._busy.on = False


def setup_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    """Send the node's records to stderr as ``fmt`` ("json" or "kv"); quiet pynetdicom's own chatter.

    Records of every other logger, and Python warnings, become ``library_log`` events without
    their text (see :class:`_LibraryHandler`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [_LibraryHandler()]
    root.setLevel(logging.WARNING)
    for name in ("pynetdicom", "pydicom", "highdicom"):
        library = logging.getLogger(name)
        library.setLevel(logging.WARNING)
        library.handlers[:] = []
        library.propagate = True
    logging.captureWarnings(True)
    threading.excepthook = _thread_error


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """Uncaught exceptions in threads: an event with the exception type, not its text."""
    name = args.exc_type.__name__ if args.exc_type is not None else "unknown"
    thread = args.thread.name if args.thread is not None else "-"
    event("thread_error", logging.ERROR, thread=re.sub(r"[^A-Za-z0-9_.@-]", "_", thread)[:40], error=name)
