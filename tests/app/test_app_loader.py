"""Study loader: chest / view rules on the real headers, two-series studies, rejections, duplicates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from operators.study_loader import (
    FRONTAL_SCORE_MIN,
    CXRStudy,
    Rejection,
    chest_problem,
    classify_view,
    frontal_score,
    load_studies,
    write_rejection,
)
from tests.app.conftest import (
    CHEST_FILES,
    REJECTED_FILES,
    SMALL_CHEST_FILE,
    derived_instance,
    two_series_study,
)
from uar.data.dicom_pixels import read_dicom_display


def header(dicom_dir: Path, name: str) -> pydicom.Dataset:
    return pydicom.dcmread(dicom_dir / name, stop_before_pixels=True)


def test_chest_rule_on_real_headers(dicom_dir: Path) -> None:
    for name in CHEST_FILES:
        assert chest_problem(header(dicom_dir, name)) is None, name
    for name, word in REJECTED_FILES.items():
        problem = chest_problem(header(dicom_dir, name))
        assert problem is not None and word in problem, (name, problem)


def test_view_rules_on_real_headers(dicom_dir: Path) -> None:
    for name in CHEST_FILES:
        view, source = classify_view(header(dicom_dir, name))
        if name.startswith("nhsx"):  # no ViewPosition, orientation or description: image fallback
            assert (view, source) == (None, "")
        else:
            assert view == "frontal" and source.startswith("ViewPosition=P"), name
    # The animal thorax: no ViewPosition, PatientOrientation L\F, but its protocol says LATERAL.
    view, source = classify_view(header(dicom_dir, "highdicom__dx_image.dcm"))
    assert view == "lateral" and "LATERAL" in source


def test_view_rule_order() -> None:
    ds = pydicom.Dataset()
    ds.PatientOrientation = ["P", "F"]
    assert classify_view(ds) == ("lateral", "PatientOrientation row=P")
    ds.SeriesDescription = "CHEST PA"
    assert classify_view(ds)[0] == "frontal"
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10236", "SRT", "left lateral"
    ds.ViewCodeSequence = [code]
    assert classify_view(ds) == ("lateral", "ViewCodeSequence=left lateral")
    ds.ViewPosition = "AP"
    assert classify_view(ds) == ("frontal", "ViewPosition=AP")
    bare = pydicom.Dataset()
    bare.ImageLaterality = "B"
    assert classify_view(bare) == ("frontal", "ImageLaterality=B")


def test_frontal_score_separates_frontal_and_lateral(dicom_dir: Path) -> None:
    frontal = read_dicom_display(str(dicom_dir / "nhsx__nih-chestxray14_dx.dcm"))
    lateral = read_dicom_display(str(dicom_dir / "highdicom__dx_image.dcm"))
    assert frontal_score(frontal) > FRONTAL_SCORE_MIN > frontal_score(lateral)
    flat = np.full((64, 64), 0.5, dtype=np.float32)
    assert frontal_score(flat) == 0.0


def test_two_series_study_uses_frontal_and_lateral(dicom_dir: Path, tmp_path: Path) -> None:
    frontal, lateral = two_series_study(dicom_dir / SMALL_CHEST_FILE, tmp_path / "in")
    [study] = load_studies(tmp_path / "in")
    assert isinstance(study, CXRStudy)
    assert study.study_instance_uid == frontal.StudyInstanceUID
    assert study.sop_instance_uids == [frontal.SOPInstanceUID, lateral.SOPInstanceUID]
    assert study.frontal.view_source == "ViewPosition=PA"
    assert study.lateral is not None and study.lateral.view_source == "ViewPosition=LL"
    assert study.frontal.pixels.dtype == np.float32 and study.frontal.pixels.shape == (440, 440)
    assert study.unused == []


def test_duplicates_and_non_images_in_a_study(dicom_dir: Path, tmp_path: Path) -> None:
    source = dicom_dir / SMALL_CHEST_FILE
    frontal, lateral = two_series_study(source, tmp_path / "in")
    # a smaller second frontal in the frontal series: not used, listed as unused
    small = derived_instance(
        source, tmp_path / "in", study_uid=frontal.StudyInstanceUID, series_uid=frontal.SeriesInstanceUID
    )
    ds = pydicom.dcmread(tmp_path / "in" / f"{small.SOPInstanceUID}.dcm")
    ds.PixelData = ds.pixel_array[::2, ::2].copy().tobytes()
    ds.Rows, ds.Columns = 220, 220
    ds.save_as(tmp_path / "in" / f"{small.SOPInstanceUID}.dcm", enforce_file_format=True)
    # a non-image instance of the same study (no Rows/Columns): ignored
    derived_instance(
        source,
        tmp_path / "in",
        study_uid=frontal.StudyInstanceUID,
        series_uid=generate_uid(),
        Rows=None,
        Columns=None,
        PixelData=None,
        Modality="SR",
    )
    [study] = load_studies(tmp_path / "in")
    assert isinstance(study, CXRStudy)
    assert study.sop_instance_uids == [frontal.SOPInstanceUID, lateral.SOPInstanceUID]
    assert study.unused == [small.SOPInstanceUID]


def test_rejections_do_not_stop_other_studies(dicom_dir: Path, tmp_path: Path) -> None:
    source = dicom_dir / SMALL_CHEST_FILE
    inputs = tmp_path / "in"
    frontal, _ = two_series_study(source, inputs)
    lateral_only = derived_instance(
        source, inputs, study_uid=generate_uid(), series_uid=generate_uid(), ViewPosition="LL"
    )
    ct = derived_instance(source, inputs, study_uid=generate_uid(), series_uid=generate_uid(), Modality="CT")
    knee = derived_instance(
        source,
        inputs,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        BodyPartExamined=None,
        StudyDescription="KNEE 2 VIEWS",
    )
    (inputs / "notes.txt").write_text("not DICOM")
    results = {r.study_instance_uid: r for r in load_studies(inputs)}
    assert isinstance(results[frontal.StudyInstanceUID], CXRStudy)
    reasons = {uid: r.reason for uid, r in results.items() if isinstance(r, Rejection)}
    assert reasons[lateral_only.StudyInstanceUID] == "no frontal view"
    assert reasons[ct.StudyInstanceUID] == "Modality 'CT' is not CR or DX"
    assert reasons[knee.StudyInstanceUID] == "not a chest radiograph: StudyDescription names 'KNEE'"
    assert reasons[None] == "not readable as DICOM"
    assert results[None].files == ["notes.txt"]
    path = write_rejection(results[lateral_only.StudyInstanceUID], tmp_path / "out")
    assert json.loads(path.read_text())["reason"] == "no frontal view"


def test_any_transfer_syntax_and_recursive_folders(dicom_dir: Path, tmp_path: Path) -> None:
    for i, name in enumerate(CHEST_FILES):
        (tmp_path / "in" / f"sub{i}").mkdir(parents=True)
        shutil.copy(dicom_dir / name, tmp_path / "in" / f"sub{i}" / name)
    transfer_syntaxes = {header(dicom_dir, n).file_meta.TransferSyntaxUID for n in CHEST_FILES}
    assert len(transfer_syntaxes) >= 5  # J2K lossy/lossless, JPEG baseline, explicit/implicit LE
    studies = load_studies(tmp_path / "in")
    assert all(isinstance(s, CXRStudy) for s in studies)
    for s in studies:
        pixels = s.frontal.pixels
        assert pixels.dtype == np.float32 and 0.0 <= pixels.min() < pixels.max() <= 1.0


def test_mixed_study_uses_only_its_chest_images(dicom_dir: Path, tmp_path: Path) -> None:
    source = dicom_dir / SMALL_CHEST_FILE
    study_uid = generate_uid()
    chest = derived_instance(source, tmp_path / "a", study_uid=study_uid, series_uid=generate_uid())
    derived_instance(
        source, tmp_path / "a", study_uid=study_uid, series_uid=generate_uid(), BodyPartExamined="HAND"
    )
    [study] = load_studies(tmp_path / "a")
    assert isinstance(study, CXRStudy) and study.sop_instance_uids == [chest.SOPInstanceUID]
    # two different problems: a summary reason, and one detail per instance
    other = generate_uid()
    derived_instance(source, tmp_path / "b", study_uid=other, series_uid=generate_uid(), Modality="MG")
    derived_instance(
        source, tmp_path / "b", study_uid=other, series_uid=generate_uid(), BodyPartExamined="SKULL"
    )
    [rejection] = load_studies(tmp_path / "b")
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "no chest CR/DX image in the study"
    assert sorted(d.split(": ", 1)[1] for d in rejection.details) == [
        "Modality 'MG' is not CR or DX",
        "not a chest radiograph: BodyPartExamined 'SKULL'",
    ]
