"""The application as the node and the MAP run it: in-process runner, CLI, HOLOSCAN_* variables,
app.yaml settings through the SDK config mechanism, model resolution and caching."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest
import yaml

from operators.inference import find_checkpoint, load_generator
from plugin.runner import run_app
from plugin.settings import REPO_APP_YAML, AppSettings
from tests.app.conftest import SMALL_CHEST_FILE, two_series_study
from uar.generator import ReportGenerator, default_checkpoint_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study_dir(dicom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runner") / "in"
    two_series_study(dicom_dir / SMALL_CHEST_FILE, folder)
    return folder


def test_repeated_runs_in_one_process(study_dir: Path, generator: ReportGenerator, tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    uids = set()
    for i in range(3):
        result = run_app(study_dir, tmp_path / f"out{i}", generator=generator)
        [sr_path] = result.srs
        uids.add(pydicom.dcmread(sr_path).SOPInstanceUID)
        assert result.rejections == [] and result.pdfs == []
        assert result.reports[0].report.model_name == generator.name
    assert len(uids) == 3
    assert root.handlers == handlers_before  # the SDK did not reconfigure the host's logging


def test_concurrent_runs_in_threads(study_dir: Path, generator: ReportGenerator, tmp_path: Path) -> None:
    counts: dict[int, int] = {}

    def work(worker: int) -> None:
        counts[worker] = sum(
            len(run_app(study_dir, tmp_path / f"w{worker}-{i}", generator=generator).srs) for i in range(2)
        )

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == {0: 2, 1: 2}


def test_settings_from_app_yaml_via_holoscan_config_path(
    study_dir: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = yaml.safe_load(REPO_APP_YAML.read_text())
    assert AppSettings.from_dict(doc["uar"]) == AppSettings.from_yaml(REPO_APP_YAML)
    doc["uar"].update(write_pdf=True, sr_series_number=42, beam_size=1, int8_decoding=True)
    config = tmp_path / "app.yaml"
    config.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("HOLOSCAN_CONFIG_PATH", str(config))
    result = run_app(study_dir, tmp_path / "out", model_path=tiny_checkpoint.parent)
    assert pydicom.dcmread(result.srs[0]).SeriesNumber == 42
    [pdf] = result.pdfs
    assert pydicom.dcmread(pdf).SeriesNumber == AppSettings().pdf_series_number
    doc["uar"]["beam_width"] = 2
    config.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="beam_width"):
        run_app(study_dir, tmp_path / "out2", model_path=tiny_checkpoint.parent)


def test_app_yaml_is_a_packager_manifest() -> None:
    doc = yaml.safe_load(REPO_APP_YAML.read_text())
    application = doc["application"]
    assert application["title"] and application["version"]
    assert application["input-formats"] == ["file"] and application["output-formats"] == ["file"]
    assert doc["resources"]["gpu"] == 0 and doc["resources"]["cpu"] >= 1 and doc["resources"]["memory"]


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "plugin", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_arguments_and_holoscan_variables(study_dir: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    by_args = run_cli(
        ["-i", str(study_dir), "-o", str(tmp_path / "a"), "-m", str(tiny_checkpoint.parent)], {}
    )
    assert by_args.returncode == 0, by_args.stderr[-3000:]
    by_env = run_cli(
        [],
        {
            "HOLOSCAN_INPUT_PATH": str(study_dir),
            "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "b"),
            "HOLOSCAN_MODEL_PATH": str(tiny_checkpoint),
        },
    )
    assert by_env.returncode == 0, by_env.stderr[-3000:]
    for out in ("a", "b"):
        [sr] = list((tmp_path / out).glob("SR_*.dcm"))
        assert pydicom.dcmread(sr).ContentTemplateSequence[0].TemplateIdentifier == "2000"


def test_find_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    assert find_checkpoint(None) is None
    assert find_checkpoint(tmp_path / "missing") is None
    assert find_checkpoint(tiny_checkpoint) == tiny_checkpoint.resolve()
    assert find_checkpoint(tiny_checkpoint.parent) == tiny_checkpoint.resolve()
    nested = tmp_path / "models" / "uar"
    nested.mkdir(parents=True)
    (nested / "m.safetensors").symlink_to(tiny_checkpoint)
    assert find_checkpoint(tmp_path / "models") == tiny_checkpoint.resolve()
    (nested / "n.safetensors").symlink_to(tiny_checkpoint)
    with pytest.raises(ValueError, match="several checkpoints"):
        find_checkpoint(tmp_path / "models")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="not a .safetensors"):
        find_checkpoint(tmp_path / "model.pt")


def test_generators_are_cached_per_checkpoint(tiny_checkpoint: Path, generator: ReportGenerator) -> None:
    assert load_generator(tiny_checkpoint) is generator
    assert load_generator(tiny_checkpoint.parent) is generator


def test_embedded_default_model_without_checkpoint(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    assert find_checkpoint(empty) is None
    if default_checkpoint_path().is_file():
        assert load_generator(empty) is load_generator(None)
        assert load_generator(None).name == ReportGenerator.load(None).name
    else:
        with pytest.raises(FileNotFoundError):
            load_generator(empty)
