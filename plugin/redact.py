"""Library log records without their text, for the app run as a program (``python -m plugin``).

pydicom, highdicom and pynetdicom quote values from the data they handle in their messages (e.g.
"Invalid value for VR UI: '<received value>'"); Python warnings do the same. Logs must never carry
a received value, so :func:`redact_library_logs` replaces the text of every record from those
libraries (and of every captured warning) by a generic line naming only the library and level.
"""

from __future__ import annotations

import logging
from typing import Any

REDACTED_LOGGERS = ("pydicom", "highdicom", "pynetdicom", "py.warnings")


def _redacted(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in REDACTED_LOGGERS)


def redact_library_logs() -> None:
    """Route warnings to logging and strip the text of library records (idempotent)."""
    logging.captureWarnings(True)
    factory = logging.getLogRecordFactory()
    if getattr(factory, "uar_redacting", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if _redacted(record.name):
            record.msg = f"{record.name} {record.levelname.lower()} (text withheld: may quote received data)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return record

    make.uar_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)
