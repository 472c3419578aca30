"""Fixtures of the MAP tests: a Docker daemon and the MAP image, built once per session.

The daemon is the system one when ``docker`` reaches it, else a private Debian ``docker.io``
daemon on its own socket (scripts/map-docker.sh; installed with apt when missing), stopped at the
end of the session if this session started it. The image is built by ``scripts/package-map.sh``
(what ``make package`` runs): the base image and the wheelhouse are cached under
``$UAR_MAP_CACHE`` (default /var/cache/uar-map) and the build layers in the daemon, so only the
first build on a machine is slow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

MAP_TAG = "uar-report-node-map:test"
MAP_MAX_BYTES = 2.5e9  # issue 16: the image stays under 2.5 GB


@dataclass(frozen=True)
class MapImage:
    """The built image: its tag, the packager's generated files, and the build's measurements."""

    tag: str
    stage: Path  # scripts/package-map.sh staging folder (packager/ holds app.json, pkg.json, ...)
    size_bytes: int
    build_s: float
    env: dict[str, str]  # the environment that reaches the Docker daemon


def _docker_reachable(env: dict[str, str]) -> bool:
    if shutil.which("docker") is None:
        return False
    proc = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], env=env, capture_output=True, timeout=60
    )
    return proc.returncode == 0


@pytest.fixture(scope="session")
def docker_env() -> Iterator[dict[str, str]]:
    """Environment (``DOCKER_HOST``) of a Docker daemon that answers."""
    env = dict(os.environ)
    if env.get("DOCKER_HOST") or _docker_reachable(env):
        yield env
        return
    script = str(REPO / "scripts" / "map-docker.sh")
    proc = subprocess.run(["bash", script, "start"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env["DOCKER_HOST"] = proc.stdout.strip()
    yield env
    if "started" in proc.stderr:
        subprocess.run(["bash", script, "stop"], timeout=120, check=False)


@pytest.fixture(scope="session")
def map_image(docker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> MapImage:
    """``scripts/package-map.sh`` with the default (embedded) model, tagged :data:`MAP_TAG`."""
    if shutil.which("mmdebstrap") is None:
        subprocess.run(["bash", str(REPO / "scripts" / "install-system-deps.sh")], check=True)
    stage = tmp_path_factory.mktemp("map")
    env = {
        **docker_env,
        "MAP_STAGE": str(stage),
        "MAP_TAG": MAP_TAG,
        "PACKAGER_VENV": str(REPO / "build" / "holoscan-cli-4.2.0"),
    }
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "scripts/package-map.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800
    )
    build_s = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search(r"MAP image \S+: [\d.]+ GB \((\d+) bytes\)", proc.stdout)
    assert match, proc.stdout[-2000:]
    image = MapImage(MAP_TAG, stage, int(match.group(1)), build_s, docker_env)
    print(f"\nMAP image {MAP_TAG}: {image.size_bytes / 1e9:.2f} GB, built in {build_s:.0f} s")
    return image
