"""Synthetic DICOM studies: readable by pydicom and dcmtk, lossless, deterministic, realistic tags."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1

from tests.conftest import require_tool
from uar.data.dicom_pixels import dicom_to_display
from uar.synthetic.dicom import TRANSFER_SYNTAXES, to_stored, write_study
from uar.synthetic.jpeg_lossless import encode_jpeg_lossless_sv1
from uar.synthetic.render import render
from uar.synthetic.sampling import sample_case

SIZE = 192


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, Path]]:
    """One study per transfer syntax (case i uses syntax i)."""
    root = tmp_path_factory.mktemp("dicom")
    out = {}
    for i, syntax in enumerate(TRANSFER_SYNTAXES):
        case = sample_case(np.random.default_rng([3, i]))
        files = write_study(root / f"s{i}", case, seed=3, size=SIZE, transfer_syntax=syntax)
        out[str(syntax)] = (case, files)
    return out


@pytest.mark.parametrize("syntax", [str(s) for s in TRANSFER_SYNTAXES])
def test_pydicom_decodes_the_rendered_pixels_exactly(studies, syntax):
    case, files = studies[syntax]
    for view, path in (("frontal", files.frontal), ("lateral", files.lateral)):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax
        expected = to_stored(
            render(case, view, size=SIZE), case.acquisition.bits_stored, case.acquisition.photometric
        )
        assert np.array_equal(ds.pixel_array, expected)
        # the display pipeline of the product undoes MONOCHROME1 and the window
        display = dicom_to_display(ds)
        assert np.corrcoef(display.ravel(), render(case, view, size=SIZE).ravel())[0, 1] > 0.98


def test_two_series_of_one_study_with_realistic_tags(studies):
    seen_modalities, seen_photometric = set(), set()
    for case, files in studies.values():
        front, lat = pydicom.dcmread(files.frontal), pydicom.dcmread(files.lateral)
        assert front.StudyInstanceUID == lat.StudyInstanceUID == files.study_uid
        assert front.SeriesInstanceUID != lat.SeriesInstanceUID
        assert (front.SeriesNumber, lat.SeriesNumber) == (1, 2)
        assert front.PatientID == lat.PatientID == files.patient_id
        for ds in (front, lat):
            assert ds.BodyPartExamined == "CHEST"
            assert ds.Modality == case.acquisition.modality
            assert 10 <= ds.BitsStored <= 16 and ds.HighBit == ds.BitsStored - 1
            assert int(ds.pixel_array.max()) < 1 << ds.BitsStored
            assert float(ds.WindowWidth) > 0
            assert ds.PhotometricInterpretation == case.acquisition.photometric
            assert ds.ImageLaterality == "U"
            if ds.Modality == "DX":
                assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
                assert ds.ViewCodeSequence[0].CodingSchemeDesignator == "SCT"
                expected_shape = "IDENTITY" if ds.PhotometricInterpretation == "MONOCHROME2" else "INVERSE"
                assert ds.PresentationLUTShape == expected_shape
            else:
                assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
        assert front.ViewPosition == case.acquisition.projection and lat.ViewPosition == "LL"
        assert list(front.PatientOrientation) == ["L", "F"] and list(lat.PatientOrientation) == ["P", "F"]
        seen_modalities.add(front.Modality)
        seen_photometric.add(front.PhotometricInterpretation)
    assert seen_modalities == {"CR", "DX"}
    assert seen_photometric == {"MONOCHROME1", "MONOCHROME2"}


def test_dcmdump_reads_every_file(studies):
    dcmdump = require_tool("dcmdump")
    for _, files in studies.values():
        for path in (files.frontal, files.lateral):
            res = subprocess.run([dcmdump, "-q", str(path)], capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            assert "(0018,0015) CS [CHEST]" in res.stdout
            assert "(7fe0,0010)" in res.stdout


def test_dcmtk_decodes_our_jpeg_lossless(studies, tmp_path):
    dcmdjpeg = require_tool("dcmdjpeg")
    case, files = studies[str(JPEGLosslessSV1)]
    out = tmp_path / "decoded.dcm"
    res = subprocess.run([dcmdjpeg, str(files.frontal), str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert np.array_equal(pydicom.dcmread(out).pixel_array, pydicom.dcmread(files.frontal).pixel_array)


@pytest.mark.parametrize("precision", [8, 12, 16])
def test_jpeg_lossless_sv1_encoder_round_trip(precision):
    rng = np.random.default_rng(precision)
    img = rng.integers(0, 1 << precision, size=(37, 53)).astype(np.uint16)  # worst case: noise
    img[5:20, 10:40] = (1 << precision) - 1  # flat runs and 0xFF bytes
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.Rows, ds.Columns = img.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if precision <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = precision, precision - 1, 0
    ds.PixelData = encapsulate([encode_jpeg_lossless_sv1(img, precision)])
    assert np.array_equal(ds.pixel_array, img)
    with pytest.raises(ValueError, match="values"):
        encode_jpeg_lossless_sv1(img, precision - 1 if precision > 8 else 4)


def test_same_seed_same_bytes(tmp_path):
    case = sample_case(np.random.default_rng(5))
    a = write_study(tmp_path / "a", case, seed=1, size=96)
    b = write_study(tmp_path / "b", case, seed=1, size=96)
    c = write_study(tmp_path / "c", case, seed=2, size=96)
    assert a.frontal.read_bytes() == b.frontal.read_bytes()
    assert a.lateral.read_bytes() == b.lateral.read_bytes()
    assert a.study_uid == b.study_uid != c.study_uid
    for syntax in TRANSFER_SYNTAXES:  # compressed files too keep their seeded SOP Instance UID
        x = write_study(tmp_path / "x", case, seed=1, size=64, transfer_syntax=syntax)
        first = x.frontal.read_bytes()
        y = write_study(tmp_path / "y", case, seed=1, size=64, transfer_syntax=syntax)
        assert y.frontal.read_bytes() == first
    with pytest.raises(ValueError, match="transfer syntax"):
        write_study(tmp_path / "d", case, seed=1, size=96, transfer_syntax="1.2.840.10008.1.2.4.50")
