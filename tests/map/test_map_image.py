"""The MAP image for real: built by scripts/package-map.sh, run with Docker on real DICOM files.

One build per session (tests/map/conftest.py). Each test starts containers the way a MONAI Deploy
workflow manager does: ``docker run --rm --network none --read-only`` with a tmpfs ``/tmp``, the
study at ``/var/holoscan/input`` (read-only) and an empty ``/var/holoscan/output``. The per-study
time of the container (start, imports, model load, one study; wall clock and CPU seconds) is
printed beside the same study run with ``python -m plugin``. The wall clock favours the container
under load: it runs in its own CPU cgroup, which the scheduler weighs against the whole host.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from operators.study_loader import rejection_file_name
from plugin.settings import AppSettings
from tests.app.conftest import REJECTED_FILES, SMALL_CHEST_FILE
from tests.conftest import REPO, require_tool
from tests.map.conftest import MAP_MAX_BYTES, MapImage
from uar.checkpoint import read_metadata

DEFAULT_MODEL = REPO / "uar" / "default_model" / "uar-default.safetensors"
NON_CHEST_FILE = "pydicom-data__RG3_J2KI.dcm"  # CR lower leg (BodyPartExamined EXTREMITY)
CONTAINER_UID = 1000  # the image's holoscan user
MANUFACTURER = AppSettings().manufacturer  # of the SR's ContributingEquipmentSequence item

# Run inside the image: what a reviewer of the MAP layout would look at, as one JSON object.
_INSPECT = r"""
import importlib.metadata as m, json, os, pathlib, pwd, shutil
roots = ("/opt", "/tmp", "/root", "/home", "/var", "/usr/local")
print(json.dumps({
    "uid": os.getuid(),
    "user": pwd.getpwuid(os.getuid()).pw_name,
    "cwd": os.getcwd(),
    "env": {k: v for k, v in os.environ.items() if k.startswith("HOLOSCAN_")},
    "app_json": json.load(open("/etc/holoscan/app.json")),
    "pkg_json": json.load(open("/etc/holoscan/pkg.json")),
    "app_yaml": open("/var/holoscan/app.yaml").read(),
    "app_main": os.path.isfile("/opt/holoscan/app/__main__.py"),
    "tools": os.access("/var/holoscan/tools", os.X_OK),
    "io_dirs": [os.path.isdir(p) for p in ("/var/holoscan/input", "/var/holoscan/output")],
    "models": sorted(str(p) for p in pathlib.Path("/opt/holoscan/models").rglob("*") if p.is_file()),
    "compilers": [c for c in ("gcc", "cc", "g++", "c++", "clang", "make") if shutil.which(c)],
    "dists": sorted(d.metadata["Name"].lower() for d in m.distributions()),
    "torch": m.version("torch"),
    "caches": [str(p) for r in roots for p in pathlib.Path(r).rglob("*")
               if p.name == ".cache" or p.suffix == ".whl"],
}))
"""


def docker(image: MapImage, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], env=image.env, capture_output=True, text=True, timeout=timeout)


def run_map(
    image: MapImage, in_dir: Path, out_dir: Path, timed: bool = False
) -> tuple[subprocess.CompletedProcess[str], float]:
    """One MAP run on ``in_dir`` as a workflow manager starts it; returns the result and its seconds.

    ``timed`` runs the app's command (app.json) under bash's ``time`` and this process's niceness:
    the last line of stderr is then ``cpu <user s> <system s>``.
    """
    entry, command = [], []
    if timed:
        entry = ["--entrypoint", "bash"]
        run = f"nice -n {os.nice(0)} python3 /opt/holoscan/app"
        command = ["-c", f"TIMEFORMAT='cpu %U %S'; time {run}"]
    out_dir.mkdir(parents=True)
    out_dir.chmod(0o777)  # the container's user (uid 1000) writes here
    t0 = time.monotonic()
    proc = docker(
        image,
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=256m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-e",
        "OMP_NUM_THREADS=1",
        "-v",
        f"{in_dir}:/var/holoscan/input:ro",
        "-v",
        f"{out_dir}:/var/holoscan/output",
        *entry,
        image.tag,
        *command,
    )
    return proc, time.monotonic() - t0


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def study_folder(dicom_dir: Path, dest: Path, name: str) -> Path:
    """A folder holding a copy of one real file (readable by the container's user)."""
    dest.mkdir(parents=True)
    shutil.copyfile(dicom_dir / name, dest / name)
    (dest / name).chmod(0o644)
    return dest


@pytest.mark.slow
def test_map_image_layout(map_image: MapImage) -> None:
    assert map_image.size_bytes < MAP_MAX_BYTES
    [config] = json.loads(docker(map_image, "image", "inspect", map_image.tag).stdout)
    assert config["Config"]["User"] == "holoscan"
    assert config["Config"]["Entrypoint"] == ["python3", "/opt/holoscan/app"]
    proc = docker(
        map_image, "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python3",
        map_image.tag, "-c", _INSPECT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)

    packager = map_image.stage / "packager"
    app_json = json.loads((packager / "map" / "app.json").read_text())
    assert seen["app_json"] == app_json  # exactly what holoscan-cli 4.2.0 generated
    assert seen["pkg_json"] == json.loads((packager / "map" / "pkg.json").read_text())
    assert seen["app_yaml"] == (REPO / "app.yaml").read_text()
    assert app_json["command"] == '["python3", "/opt/holoscan/app"]' and app_json["sdk"] == "monai-deploy"
    assert seen["pkg_json"]["models"] == {"uar-default": "/opt/holoscan/models/uar-default"}
    assert seen["models"] == ["/opt/holoscan/models/uar-default/uar-default.safetensors"]
    assert seen["env"] == {**app_json["environment"], "HOLOSCAN_VERSION": seen["env"]["HOLOSCAN_VERSION"]}
    assert seen["cwd"] == app_json["workingDirectory"] == "/var/holoscan"
    assert seen["app_main"] and seen["tools"] and seen["io_dirs"] == [True, True]
    assert seen["uid"] == CONTAINER_UID and seen["user"] == "holoscan"

    # small and offline: CPU torch, runtime dependencies only, no compilers, caches or wheels
    assert seen["torch"] == "2.13.0+cpu"
    assert {"monai-deploy-app-sdk", "holoscan-cu13", "highdicom", "pydicom"} <= set(seen["dists"])
    assert not {"pytest", "ruff", "pycocoevalcap", "pynetdicom"} & set(seen["dists"])
    assert seen["compilers"] == [] and seen["caches"] == []


@pytest.mark.slow
def test_map_reports_a_chest_study_like_python_m_plugin(
    map_image: MapImage, dicom_dir: Path, tmp_path: Path
) -> None:
    in_dir = study_folder(dicom_dir, tmp_path / "in", SMALL_CHEST_FILE)
    proc, map_s = run_map(map_image, in_dir, tmp_path / "out", timed=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    map_cpu = sum(float(v) for v in proc.stderr.strip().splitlines()[-1].split()[1:])
    [sr_path] = sorted((tmp_path / "out").glob("SR_*.dcm"))
    assert sr_path.stat().st_uid == CONTAINER_UID  # written by the non-root user

    t0, cpu0 = time.monotonic(), _children_cpu_s()
    local = subprocess.run(
        [sys.executable, "-m", "plugin", "-i", str(in_dir), "-o", str(tmp_path / "local")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    local_s, local_cpu = time.monotonic() - t0, _children_cpu_s() - cpu0
    assert local.returncode == 0, local.stderr[-3000:]
    print(
        f"\nper study ({SMALL_CHEST_FILE}): MAP container {map_s:.1f} s wall / {map_cpu:.1f} s CPU,"
        f" python -m plugin {local_s:.1f} s wall / {local_cpu:.1f} s CPU"
        f" (image built in {map_image.build_s:.0f} s)"
    )

    sr = pydicom.dcmread(sr_path)
    meta = read_metadata(DEFAULT_MODEL)
    [equipment] = [item for item in sr.ContributingEquipmentSequence if item.Manufacturer == MANUFACTURER]
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == (
        meta["model_name"],
        meta["model_version"],
    )
    check = subprocess.run(
        [require_tool("dciodvfy"), str(sr_path)], capture_output=True, text=True, timeout=60
    )
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], check.stderr[-2000:]
    # the same model on the same study: the same report as outside the container
    [local_sr] = sorted((tmp_path / "local").glob("SR_*.dcm"))
    findings = [
        {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in ds.ContentSequence}["Findings"]
        .ContentSequence[0]
        .TextValue
        for ds in (sr, pydicom.dcmread(local_sr))
    ]
    assert findings[0] == findings[1]


@pytest.mark.slow
def test_map_rejects_a_non_chest_study(map_image: MapImage, dicom_dir: Path, tmp_path: Path) -> None:
    in_dir = study_folder(dicom_dir, tmp_path / "in", NON_CHEST_FILE)
    proc, _ = run_map(map_image, in_dir, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    study_uid = pydicom.dcmread(dicom_dir / NON_CHEST_FILE, stop_before_pixels=True).StudyInstanceUID
    assert out == [rejection_file_name(study_uid)]
    record = json.loads((tmp_path / "out" / out[0]).read_text())
    assert record["status"] == "rejected" and REJECTED_FILES[NON_CHEST_FILE] in record["reason"]
