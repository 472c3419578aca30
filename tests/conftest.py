"""Shared fixtures: where the real data lives, and the Debian tools the tests drive."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The read-only data folder: $UAR_SHARED_DATA, else ../shared/data beside the checkout, else the
# workspace's /work/shared/data (for clones made elsewhere, e.g. /tmp/fresh).
_CANDIDATES = [REPO.parent / "shared" / "data", Path("/work/shared/data")]
SHARED_DATA = Path(
    os.environ.get("UAR_SHARED_DATA")
    or next((str(p) for p in _CANDIDATES if p.is_dir()), str(_CANDIDATES[0]))
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data beside the checkout (IU-Xray reports, radiographs, DICOM files)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set UAR_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    """Folder of the 10 real CR/DX DICOM files."""
    return shared_data / "dicom"


def require_tool(name: str) -> str:
    """Return the path of a Debian tool, installing the system dependencies once if it is missing."""
    path = shutil.which(name)
    if path is None:
        subprocess.run(["bash", str(REPO / "scripts" / "install-system-deps.sh")], check=True)
        path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed and could not be installed")
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
