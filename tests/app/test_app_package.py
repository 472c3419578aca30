"""MAP packaging with holoscan-cli 4.2.0, run as far as it goes without Docker.

A mock-free full run is impossible here: the packager's next step is ``docker buildx`` against a
Docker daemon, which CI machines do not have (it then pulls nvcr.io images). To stop at the same
point on every machine, even one with Docker, ``docker`` on PATH is replaced by a stub that fails;
everything before it is real: ``scripts/package-map.sh`` installs holoscan-cli 4.2.0 from the
package registry into a venv cached under ``build/`` (git-ignored), stages the app and runs
``holoscan package -l DEBUG --source <manifest keyed by the installed Holoscan version>``, which
prints the app.json, pkg.json and Dockerfile it generated. The test checks those three, then runs the
staged application folder the way the MAP does (``python3 /opt/holoscan/app`` with
``HOLOSCAN_CONFIG_PATH`` set) on a real chest file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.app.conftest import SMALL_CHEST_FILE

REPO = Path(__file__).resolve().parents[2]
PACKAGER_VENV = REPO / "build" / "holoscan-cli-4.2.0"


def between(log: str, begin: str, end: str) -> str:
    match = re.search(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), log, re.S)
    assert match, f"{begin!r} not in the packager log"
    return match.group(1)


@pytest.mark.slow
def test_packager_generates_manifests_and_dockerfile(
    dicom_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "docker").write_text(
        '#!/bin/sh\necho "docker stub: no Docker daemon in this test" >&2\nexit 125\n'
    )
    (stub / "docker").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{stub}:{os.environ['PATH']}",
        "PACKAGER_VENV": str(PACKAGER_VENV),
        "MAP_STAGE": str(tmp_path / "map"),
        "MAP_TAG": "uar-report-node:test",
    }
    proc = subprocess.run(
        ["bash", "scripts/package-map.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    log = (tmp_path / "map" / "package.log").read_text()
    assert proc.returncode != 0 and "docker stub" in log, proc.stdout[-2000:] + proc.stderr[-2000:]

    app_json = json.loads(
        between(log, "=============== Begin app.json ===============", "=" * 16 + " End app.json")
    )
    assert app_json["command"] == '["python3", "/opt/holoscan/app"]'
    assert app_json["sdk"] == "monai-deploy" and app_json["sdkVersion"] == "4.0.0"
    assert app_json["environment"]["HOLOSCAN_CONFIG_PATH"] == "/var/holoscan/app.yaml"
    assert app_json["input"]["formats"] == ["file"] and app_json["output"]["formats"] == ["file"]

    pkg_json = json.loads(
        between(log, "=============== Begin pkg.json ===============", "=" * 16 + " End pkg.json")
    )
    resources = yaml.safe_load((REPO / "app.yaml").read_text())["resources"]
    assert pkg_json["resources"] == resources
    assert pkg_json["applicationRoot"] == "/opt/holoscan/app"

    dockerfile = between(
        log, "========== Begin Dockerfile ==========", "=========== End Dockerfile ==========="
    )
    assert "FROM nvcr.io/nvidia/cuda:13.0.0-runtime-ubuntu24.04" in dockerfile
    assert "RUN pip install monai-deploy-app-sdk==4.0.0" in dockerfile
    assert "COPY ./app /opt/holoscan/app" in dockerfile
    assert "COPY ./app.config /var/holoscan/app.yaml" in dockerfile
    assert "ENV HOLOSCAN_MODEL_PATH=/opt/holoscan/models" in dockerfile

    requirements = (tmp_path / "map" / "app" / "requirements.txt").read_text().splitlines()
    assert "pydicom==3.0.2" in requirements and "highdicom==0.28.2" in requirements
    staged = tmp_path / "map" / "app"
    for path in ("__main__.py", "plugin/app.py", "operators/sr_writer.py", "uar/generator.py"):
        assert (staged / path).is_file(), path

    # The MAP's command, `python3 /opt/holoscan/app`, on the staged folder with the MAP's config variable.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / SMALL_CHEST_FILE).symlink_to(dicom_dir / SMALL_CHEST_FILE)
    run = subprocess.run(
        [
            sys.executable,
            str(staged),
            "-i",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "-m",
            str(tiny_checkpoint),
        ],
        cwd=tmp_path,
        env={**os.environ, "HOLOSCAN_CONFIG_PATH": str(REPO / "app.yaml"), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("SR_*.dcm"))) == 1
