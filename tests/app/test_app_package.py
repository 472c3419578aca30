"""MAP packaging with holoscan-cli 4.2.0: the manifests, config and Dockerfile it generates.

``scripts/package-map.sh`` with ``MAP_BUILD=0`` installs holoscan-cli 4.2.0 from the package
registry into a venv cached under ``build/`` (git-ignored), stages the app and runs ``holoscan
package --source <manifest keyed by the installed Holoscan version>``; the packager's ``docker`` is
scripts/map/capture-context.sh, which copies the build context the packager generated and stops it
before ``docker buildx`` (which would pull nvcr.io images). The test checks app.json, pkg.json and
the Dockerfile, then runs the staged application folder the way the MAP does (``python3
/opt/holoscan/app`` with ``HOLOSCAN_CONFIG_PATH`` set) on a real chest file. The image itself is
built and run in tests/map/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.app.conftest import SMALL_CHEST_FILE

REPO = Path(__file__).resolve().parents[2]
PACKAGER_VENV = REPO / "build" / "holoscan-cli-4.2.0"


@pytest.mark.slow
def test_packager_generates_manifests_and_dockerfile(
    dicom_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PACKAGER_VENV": str(PACKAGER_VENV),
        "MAP_STAGE": str(tmp_path / "map"),
        "MAP_TAG": "uar-report-node:test",
        "MAP_BUILD": "0",
    }
    proc = subprocess.run(
        ["bash", "scripts/package-map.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (tmp_path / "map" / "package.log").read_text()
    assert "capture-context: packager build context copied" in log
    generated = tmp_path / "map" / "packager"

    app_json = json.loads((generated / "map" / "app.json").read_text())
    assert app_json["command"] == '["python3", "/opt/holoscan/app"]'
    assert app_json["sdk"] == "monai-deploy" and app_json["sdkVersion"] == "4.0.0"
    assert app_json["environment"]["HOLOSCAN_CONFIG_PATH"] == "/var/holoscan/app.yaml"
    assert app_json["input"]["formats"] == ["file"] and app_json["output"]["formats"] == ["file"]

    pkg_json = json.loads((generated / "map" / "pkg.json").read_text())
    resources = yaml.safe_load((REPO / "app.yaml").read_text())["resources"]
    assert pkg_json["resources"] == resources
    assert pkg_json["applicationRoot"] == "/opt/holoscan/app"
    assert pkg_json["models"] == {"uar-default": "/opt/holoscan/models/uar-default"}
    assert (generated / "models" / "uar-default" / "uar-default.safetensors").is_file()
    assert (generated / "app.config").read_text() == (REPO / "app.yaml").read_text()

    dockerfile = (generated / "Dockerfile").read_text()
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
