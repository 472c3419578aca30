"""``make demo`` (python -m plugin.demo) runs the whole round trip and prints the report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool


@pytest.mark.network
def test_demo_round_trip_prints_the_report(tiny_model: Path) -> None:
    require_tool("storescu")
    require_tool("storescp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "plugin.demo", "--model", str(tiny_model)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SR received by DEMOPACS" in done.stdout and "same study: True" in done.stdout
    assert "Finding: " in done.stdout and "Impression: " in done.stdout
