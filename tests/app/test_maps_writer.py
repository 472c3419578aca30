"""Attention-map Secondary Captures (write_maps): the app on a synthetic two-view study with the
embedded default model, real files only; dciodvfy and dsrdump read what was written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from operators import maps_writer
from operators.inference import load_generator
from operators.maps_writer import SECONDARY_CAPTURE_STORAGE, view_maps
from plugin.runner import AppResult, run_app
from plugin.settings import REPO_APP_YAML, AppSettings
from tests.app.conftest import SMALL_CHEST_FILE
from tests.conftest import require_tool
from uar.generator import ReportGenerator
from uar.grounding import SentenceMap
from uar.synthetic.dicom import StudyFiles, write_study
from uar.synthetic.sampling import sample_case

SEED = 4  # a synthetic case the default model reads as within its input domain (checked below)


@pytest.fixture(scope="module")
def default_generator() -> ReportGenerator:
    """The embedded default model (its input check calibrated on synthetic studies)."""
    return load_generator(None)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyFiles:
    """A synthetic two-view study (frontal and lateral series) written as DICOM."""
    case = sample_case(np.random.default_rng(SEED), seed=SEED)
    return write_study(
        tmp_path_factory.mktemp("maps") / "in", case, SEED, size=256, transfer_syntax=ExplicitVRLittleEndian
    )


def _settings(**changes: object) -> AppSettings:
    return replace(AppSettings.from_yaml(REPO_APP_YAML), beam_size=1, **changes)


@pytest.fixture(scope="module")
def maps_run(
    study: StudyFiles, default_generator: ReportGenerator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, AppResult]]:
    """The app on the study with write_maps on."""
    out = tmp_path_factory.mktemp("maps") / "out"
    yield (
        out,
        run_app(study.frontal.parent, out, generator=default_generator, settings=_settings(write_maps=True)),
    )


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def _image_items(item: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Every IMAGE content item under ``item`` (recursive)."""
    found = []
    for child in item.get("ContentSequence", []):
        if child.ValueType == "IMAGE":
            found.append(child)
        found += _image_items(child)
    return found


def _section(sr: pydicom.Dataset, code: str) -> pydicom.Dataset:
    return next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == code)


def _evidence_uids(sr: pydicom.Dataset) -> set[str]:
    return {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }


def test_one_secondary_capture_per_view_in_a_new_series_of_the_study(
    study: StudyFiles, maps_run: tuple[Path, AppResult]
) -> None:
    out, result = maps_run
    [report] = result.reports
    assert report.report.domain.verdict == "in_domain" and not report.report.withheld
    assert report.report.maps and len(result.maps) == 2
    assert sorted(out.glob("SC_*.dcm")) == sorted(result.maps)
    frontal, lateral = (pydicom.dcmread(p) for p in (study.frontal, study.lateral))
    scs = sorted((pydicom.dcmread(p) for p in result.maps), key=lambda ds: int(ds.InstanceNumber))
    [sr] = [pydicom.dcmread(p) for p in result.srs]
    assert {ds.SeriesInstanceUID for ds in scs} == {scs[0].SeriesInstanceUID}  # one series
    assert scs[0].SeriesInstanceUID not in {
        frontal.SeriesInstanceUID,
        lateral.SeriesInstanceUID,
        sr.SeriesInstanceUID,
    }
    for ds, source in zip(scs, (frontal, lateral), strict=True):
        assert ds.SOPClassUID == SECONDARY_CAPTURE_STORAGE and ds.Modality == "OT"
        assert ds.StudyInstanceUID == study.study_uid and ds.PatientID == study.patient_id
        assert ds.SeriesDescription == "AI attention map (UAR) - NOT FOR DIAGNOSIS"
        assert int(ds.SeriesNumber) == 9903
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.ConversionType == "WSD" and ds.BurnedInAnnotation == "YES"
        assert [r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence] == [source.SOPInstanceUID]
        assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
        assert _dciodvfy_errors(Path(ds.filename)) == []
    assert _dciodvfy_errors(result.srs[0]) == []


def test_the_picture_is_the_radiograph_with_the_maps_in_colour(
    study: StudyFiles, maps_run: tuple[Path, AppResult]
) -> None:
    _, result = maps_run
    frontal_sc = min((pydicom.dcmread(p) for p in result.maps), key=lambda ds: int(ds.InstanceNumber))
    rgb = frontal_sc.pixel_array.astype(np.float32)  # (H + legend, W, 3)
    source = result.reports[0].study.frontal.pixels  # the loader's image, display polarity
    width = rgb.shape[1]
    height = round(source.shape[0] * width / source.shape[1])
    picture = rgb[:height]
    grey = np.asarray(
        Image.fromarray((source * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    chroma = picture.max(axis=2) - picture.min(axis=2)
    coloured = chroma > 40
    # the maps are blended in colour, the rest stays grey: the default model's smoothed maps colour
    # a few to a quarter of a picture's pixels (4-24 % on held-out studies), never all of it
    assert 0.0005 < coloured.mean() < 0.8
    # where nothing is blended in (no chroma at all: every map colour is saturated), the picture is
    # the radiograph to within rounding, except the black discs that carry the sentence numbers
    plain = chroma == 0
    assert plain.mean() > 0.2
    assert (np.abs(picture.mean(axis=2) - grey)[plain] <= 2).mean() > 0.98
    assert np.abs(picture.mean(axis=2) - grey)[coloured].mean() > 10  # and it differs where it is
    legend = rgb[height:]
    assert legend.shape[0] > 40 and (legend.max(axis=2) > 128).mean() > 0.005  # text under the image


def test_each_finding_with_a_map_references_the_pictures(maps_run: tuple[Path, AppResult]) -> None:
    _, result = maps_run
    [sr_path] = result.srs
    sr = pydicom.dcmread(sr_path)
    sc_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in result.maps}
    findings = _section(sr, "59776-5")
    sentences = {m.sentence for m in result.reports[0].report.maps}
    referenced = 0
    for item in findings.ContentSequence:
        images = _image_items(item)
        if item.TextValue in sentences:
            assert [i.RelationshipType for i in images] == ["INFERRED FROM"] * 2
            assert {i.ConceptNameCodeSequence[0].CodeValue for i in images} == {"121200"}
            refs = [i.ReferencedSOPSequence[0] for i in images]
            assert {r.ReferencedSOPInstanceUID for r in refs} == sc_uids  # the written instances
            assert {r.ReferencedSOPClassUID for r in refs} == {SECONDARY_CAPTURE_STORAGE}
            referenced += 1
        else:
            assert images == []
    assert referenced == len(sentences) > 0
    assert _image_items(_section(sr, "19005-8")) == []  # the impression is derived, not grounded
    assert sc_uids <= _evidence_uids(sr)  # every referenced instance is listed as evidence
    dump = subprocess.run(
        [require_tool("dsrdump"), str(sr_path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    assert dump.returncode == 0
    assert dump.stdout.count('inferred from IMAGE:(,,"Illustration of ROI")') == 2 * referenced


def test_a_frontal_only_study_gets_one_picture(
    study: StudyFiles, default_generator: ReportGenerator, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / study.frontal.name).symlink_to(study.frontal)
    result = run_app(
        inputs, tmp_path / "out", generator=default_generator, settings=_settings(write_maps=True)
    )
    [sc_path] = result.maps
    sc = pydicom.dcmread(sc_path)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(study.frontal).SOPInstanceUID
    [(source, view, maps)] = view_maps(result.reports[0].study, result.reports[0].report.maps)
    assert view == 0 and all(m.grids.shape[0] == 1 and m.share(0) == pytest.approx(1.0) for m in maps)
    assert _dciodvfy_errors(sc_path) == []
    sr = pydicom.dcmread(result.srs[0])
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in _image_items(sr)} == {
        str(sc.SOPInstanceUID)
    }


def test_write_maps_off_writes_no_picture_and_no_reference(
    study: StudyFiles, default_generator: ReportGenerator, tmp_path: Path
) -> None:
    assert AppSettings.from_yaml(REPO_APP_YAML).write_maps is False  # off by default
    result = run_app(study.frontal.parent, tmp_path, generator=default_generator, settings=_settings())
    assert result.maps == [] and list(tmp_path.glob("SC_*")) == []
    assert result.reports[0].report.maps == []
    [sr_path] = result.srs
    assert _image_items(pydicom.dcmread(sr_path)) == []


def test_a_picture_that_cannot_be_drawn_costs_the_pictures_only(
    study: StudyFiles,
    default_generator: ReportGenerator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the lateral's picture fails after the frontal's was saved: all or nothing, and the SR still comes
    drawn: list[int] = []

    def fail_on_the_lateral(*args: object, **kwargs: object) -> np.ndarray:
        drawn.append(1)
        if len(drawn) == 2:
            raise MemoryError("no memory for the lateral's picture")
        return original(*args, **kwargs)

    original = maps_writer.render_overlay
    monkeypatch.setattr(maps_writer, "render_overlay", fail_on_the_lateral)
    out = tmp_path / "out"
    result = run_app(
        study.frontal.parent, out, generator=default_generator, settings=_settings(write_maps=True)
    )
    assert len(drawn) == 2
    assert result.maps == [] and list(out.glob("SC_*")) == []  # the frontal's picture was removed
    [sr_path] = result.srs
    assert _image_items(pydicom.dcmread(sr_path)) == []  # no reference to a picture that is not there
    assert _dciodvfy_errors(sr_path) == []
    assert "attention maps not written (MemoryError)" in caplog.text
    assert "no memory for" not in caplog.text  # the exception's type, never its text


def test_an_out_of_domain_study_gets_no_picture(
    dicom_dir: Path, default_generator: ReportGenerator, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / SMALL_CHEST_FILE).symlink_to(dicom_dir / SMALL_CHEST_FILE)  # a real radiograph
    settings = _settings(write_maps=True, ood_policy="withhold")
    result = run_app(inputs, tmp_path / "out", generator=default_generator, settings=settings)
    [report] = result.reports
    assert report.report.withheld and report.report.maps == []
    assert result.maps == [] and list((tmp_path / "out").glob("SC_*")) == []
    [sr_path] = result.srs
    assert _image_items(pydicom.dcmread(sr_path)) == []


def test_attention_map_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="maps_series_description"):
        AppSettings.from_dict({"maps_series_description": "x" * 65})
    with pytest.raises(ValueError, match="maps_series_number"):
        AppSettings.from_dict({"maps_series_number": 0})


def test_a_one_view_model_gets_the_frontal_picture_only(maps_run: tuple[Path, AppResult]) -> None:
    study = maps_run[1].reports[0].study
    one_view = [SentenceMap("The lungs are clear.", (0, 4), np.full((1, 7, 7), 1 / 49, dtype=np.float32))]
    [(source, view, maps)] = view_maps(study, one_view)
    assert source is study.frontal and view == 0 and maps == one_view
