"""Fixtures of the application tests: a tiny model, app runs on the real DICOM files, two-series studies.

The real files (several MB of JPEG 2000) are decoded by session-scoped app runs: each file alone
once, and all files together once; the tests only inspect the outputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from operators.inference import load_generator
from plugin.runner import AppResult, run_app
from plugin.settings import AppSettings
from tests.helpers.tiny import make_tiny_checkpoint
from uar.generator import ReportGenerator

# The human chest radiographs among the real files (dicom/README.md); every other file is not one.
CHEST_FILES = (
    "dwv__gdcm-CR-MONO1-10-chest.dcm",
    "nhsx__nih-chestxray14_dx.dcm",
    "pydicom-data__RG1_J2KI.dcm",
    "pydicom-data__RG1_J2KR.dcm",
    "pylibjpeg-data__966_fixed.dcm",
    "torchxrayvision__Fake_MONOHR1.dcm",
    "torchxrayvision__siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
)
# Non-chest files and a word their rejection reason must contain.
REJECTED_FILES = {
    "pydicom-data__RG3_J2KI.dcm": "EXTREMITY",  # lower leg
    "pylibjpeg-data__RG2_JPLL.dcm": "HIP",
    "highdicom__dx_image.dcm": "non-human",  # canine lateral thorax
}
SMALL_CHEST_FILE = "dwv__gdcm-CR-MONO1-10-chest.dcm"  # 440 x 440, uncompressed


@dataclass
class AppRun:
    """One app run: its input folder, output folder and result."""

    input_dir: Path
    output_dir: Path
    result: AppResult


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random UAR checkpoint in its own model folder."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="session")
def generator(tiny_checkpoint: Path) -> ReportGenerator:
    """The tiny model, loaded once (through the operator's process-wide cache)."""
    return load_generator(tiny_checkpoint)


@pytest.fixture(scope="session")
def real_files(dicom_dir: Path) -> list[Path]:
    """The 10 real CR/DX files."""
    files = sorted(dicom_dir.glob("*.dcm"))
    assert {f.name for f in files} == set(CHEST_FILES) | set(REJECTED_FILES)
    return files


def link_inputs(folder: Path, files: list[Path]) -> Path:
    """An input folder holding symbolic links to ``files`` (the real data is read-only)."""
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


@pytest.fixture(scope="session")
def single_runs(
    real_files: list[Path], generator: ReportGenerator, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, AppRun]:
    """The app run on each real file alone, keyed by file name."""
    root = tmp_path_factory.mktemp("single")
    runs: dict[str, AppRun] = {}
    for f in real_files:
        input_dir = link_inputs(root / f.stem / "in", [f])
        output_dir = root / f.stem / "out"
        runs[f.name] = AppRun(input_dir, output_dir, run_app(input_dir, output_dir, generator=generator))
    return runs


@pytest.fixture(scope="session")
def all_run(
    real_files: list[Path], generator: ReportGenerator, tmp_path_factory: pytest.TempPathFactory
) -> AppRun:
    """The app run on all real files in one input folder."""
    root = tmp_path_factory.mktemp("all")
    input_dir = link_inputs(root / "in", real_files)
    return AppRun(input_dir, root / "out", run_app(input_dir, root / "out", generator=generator))


def derived_instance(
    source: Path, out: Path, *, study_uid: str, series_uid: str, **attributes: object
) -> pydicom.Dataset:
    """Write a copy of ``source`` into ``out`` as a new instance of ``study_uid`` / ``series_uid``.

    ``attributes`` are set on the copy (keyword=value; ``None`` deletes the attribute).
    """
    ds = pydicom.dcmread(source)
    ds = copy.deepcopy(ds)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out.mkdir(parents=True, exist_ok=True)
    ds.save_as(out / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return ds


def two_series_study(source: Path, out: Path) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    """A frontal (PA) series and a lateral (LL) series of one new study, both from ``source``'s pixels."""
    study_uid = generate_uid()
    frontal = derived_instance(
        source, out, study_uid=study_uid, series_uid=generate_uid(), ViewPosition="PA", SeriesNumber=1
    )
    lateral = derived_instance(
        source, out, study_uid=study_uid, series_uid=generate_uid(), ViewPosition="LL", SeriesNumber=2
    )
    return frontal, lateral


@pytest.fixture(scope="session")
def settings() -> AppSettings:
    """The settings of the repository's app.yaml."""
    from plugin.settings import REPO_APP_YAML

    return AppSettings.from_yaml(REPO_APP_YAML)
