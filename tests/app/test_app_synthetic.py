"""The app on synthetic two-series studies (uar.synthetic.dicom): frontal and lateral series of
one study in every transfer syntax the generator writes; view tags removed; lateral only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from operators.study_loader import CXRStudy, Rejection, load_studies
from plugin.runner import run_app
from tests.conftest import require_tool
from uar.generator import ReportGenerator
from uar.synthetic.dicom import TRANSFER_SYNTAXES, StudyFiles, write_study
from uar.synthetic.sampling import sample_case

VIEW_TAGS = (
    "ViewPosition",
    "ViewCodeSequence",
    "PatientOrientation",
    "ImageLaterality",
    "SeriesDescription",
    "ProtocolName",
)


def synthetic_study(folder: Path, seed: int, transfer_syntax: str | None = None) -> StudyFiles:
    case = sample_case(np.random.default_rng(seed), seed=seed)
    return write_study(folder, case, seed, size=256, transfer_syntax=transfer_syntax)


def strip_view_tags(path: Path) -> None:
    ds = pydicom.dcmread(path)
    for keyword in VIEW_TAGS:
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(path)


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[StudyFiles]]:
    root = tmp_path_factory.mktemp("synthetic") / "in"
    files = [
        synthetic_study(root / f"s{i}", seed=100 + i, transfer_syntax=ts)
        for i, ts in enumerate(TRANSFER_SYNTAXES)
    ]
    return root, files


def test_app_on_two_series_studies(
    studies: tuple[Path, list[StudyFiles]], generator: ReportGenerator, tmp_path: Path
) -> None:
    root, files = studies
    result = run_app(root, tmp_path / "out", generator=generator)
    assert result.rejections == []
    by_study = {
        r.study.study_instance_uid: (path, r) for path, r in zip(result.srs, result.reports, strict=True)
    }
    assert set(by_study) == {f.study_uid for f in files}
    for f in files:
        path, study_report = by_study[f.study_uid]
        study = study_report.study
        assert study.sop_instance_uids == [sop_uid(f.frontal), sop_uid(f.lateral)]
        assert study.frontal.view_source.startswith("ViewPosition=")
        assert study.lateral is not None and study.lateral.view_source == "ViewPosition=LL"
        sr = pydicom.dcmread(path)
        [evidence] = sr.CurrentRequestedProcedureEvidenceSequence
        series = {
            s.SeriesInstanceUID: [i.ReferencedSOPInstanceUID for i in s.ReferencedSOPSequence]
            for s in evidence.ReferencedSeriesSequence
        }
        assert sorted(uid for uids in series.values() for uid in uids) == sorted(study.sop_instance_uids)
        assert len(series) == 2
        assert sr.PatientID == f.patient_id
        proc = subprocess.run(
            [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, errors="replace"
        )
        assert [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")] == []


def test_views_from_images_without_view_tags(tmp_path: Path) -> None:
    expected = {}
    for seed in range(4):
        files = synthetic_study(tmp_path / f"s{seed}", seed=seed)
        strip_view_tags(files.frontal)
        strip_view_tags(files.lateral)
        expected[files.study_uid] = [sop_uid(files.frontal), sop_uid(files.lateral)]
    for study in load_studies(tmp_path):
        assert isinstance(study, CXRStudy)
        assert study.sop_instance_uids == expected[study.study_instance_uid]
        assert study.lateral is not None
        assert study.frontal.view_source.startswith("image frontal_score=")


def test_lateral_only_study_is_rejected(tmp_path: Path) -> None:
    files = synthetic_study(tmp_path, seed=7)
    files.frontal.unlink()
    [rejection] = load_studies(tmp_path)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "no frontal view"
    assert rejection.files == [files.lateral.name]
