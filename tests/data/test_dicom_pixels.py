"""Rendering of the 10 real CR/DX files: decoding, windowing, polarity, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless

from uar.data.dicom_pixels import DicomPixelError, dicom_to_display, read_dicom_display, window

CHEST_FRONTAL = [
    "dwv__gdcm-CR-MONO1-10-chest.dcm",  # CR MONOCHROME1, explicit VR, window
    "nhsx__nih-chestxray14_dx.dcm",  # DX MONOCHROME2, implicit VR, no window
    "pydicom-data__RG1_J2KI.dcm",  # CR MONOCHROME1, JPEG 2000 lossy
    "pydicom-data__RG1_J2KR.dcm",  # CR MONOCHROME1, JPEG 2000 lossless
    "pylibjpeg-data__966_fixed.dcm",  # DX MONOCHROME1 + Presentation LUT Shape INVERSE
    "torchxrayvision__siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",  # JPEG baseline
]
SIIM = CHEST_FRONTAL[-1]
FAKE_MONO1 = "torchxrayvision__Fake_MONOHR1.dcm"


def lungs_and_mediastinum(img: np.ndarray) -> tuple[float, float]:
    """Mean of both lung fields (outer thirds, upper-middle height) and of the central column."""
    h, w = img.shape
    lungs = 0.5 * (
        img[h // 4 : h * 3 // 5, w // 8 : w * 3 // 8].mean()
        + img[h // 4 : h * 3 // 5, w * 5 // 8 : w * 7 // 8].mean()
    )
    mediastinum = img[h // 4 : h * 3 // 4, w * 7 // 16 : w * 9 // 16].mean()
    return float(lungs), float(mediastinum)


def test_all_files_decode_to_unit_range(dicom_dir: Path) -> None:
    files = sorted(dicom_dir.glob("*.dcm"))
    assert len(files) == 10
    for f in files:
        ds = pydicom.dcmread(f)
        img = dicom_to_display(ds)
        assert img.dtype == np.float32
        assert img.shape == (ds.Rows, ds.Columns), f.name
        assert img.min() >= 0.0 and img.max() <= 1.0, f.name
        assert img.std() > 0.05, f"{f.name} rendered almost flat"


@pytest.mark.parametrize("name", CHEST_FRONTAL)
def test_chest_polarity_lungs_darker_than_mediastinum(dicom_dir: Path, name: str) -> None:
    lungs, mediastinum = lungs_and_mediastinum(read_dicom_display(str(dicom_dir / name)))
    assert lungs + 0.1 < mediastinum, (name, lungs, mediastinum)


def test_monochrome1_with_inverse_shape_is_inverted_once(dicom_dir: Path) -> None:
    ds = pydicom.dcmread(dicom_dir / "pylibjpeg-data__966_fixed.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PresentationLUTShape == "INVERSE"
    img = dicom_to_display(ds)
    lungs, mediastinum = lungs_and_mediastinum(img)
    assert lungs < mediastinum
    # Reference rendering by hand: window then a single inversion.
    raw = ds.pixel_array.astype(np.float64)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = 1.0 - np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(img, expected, atol=1e-6)


def test_fake_monochrome1_is_inverse_of_siim(dicom_dir: Path) -> None:
    siim = read_dicom_display(str(dicom_dir / SIIM))
    fake = read_dicom_display(str(dicom_dir / FAKE_MONO1))
    np.testing.assert_allclose(fake, 1.0 - siim, atol=1e-6)


def test_lossy_and_lossless_jpeg2000_agree(dicom_dir: Path) -> None:
    lossy = read_dicom_display(str(dicom_dir / "pydicom-data__RG1_J2KI.dcm"))
    lossless = read_dicom_display(str(dicom_dir / "pydicom-data__RG1_J2KR.dcm"))
    assert np.abs(lossy - lossless).mean() < 0.01


def test_jpeg_lossless_and_jpeg_ls(dicom_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_dir / "pylibjpeg-data__RG2_JPLL.dcm")  # JPEG Lossless SV1
    img = dicom_to_display(ds)
    assert img.shape == (2140, 1760)
    # Re-encode the uncompressed CR chest as JPEG-LS lossless and check the same rendering.
    src = pydicom.dcmread(dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm")
    reference = dicom_to_display(src)
    src.compress(JPEGLSLossless)
    out = tmp_path / "jls.dcm"
    src.save_as(out)
    jls = pydicom.dcmread(out)
    assert jls.file_meta.TransferSyntaxUID == JPEGLSLossless
    np.testing.assert_array_equal(dicom_to_display(jls), reference)


def test_window_functions_follow_ps3_3() -> None:
    x = np.array([0.0, 49.0, 50.0, 100.0, 151.0, 200.0])
    linear = window(x, center=100.0, width=101.0)
    # LINEAR: bottom edge c - 0.5 - (w-1)/2 = 49.5, top edge c - 0.5 + (w-1)/2 = 149.5
    np.testing.assert_allclose(linear, [0, 0, 0.005, 0.505, 1, 1])
    exact = window(x, center=100.0, width=100.0, function="LINEAR_EXACT")
    np.testing.assert_allclose(exact, [0, 0, 0, 0.5, 1, 1])
    sigmoid = window(x, center=100.0, width=100.0, function="SIGMOID")
    np.testing.assert_allclose(sigmoid[3], 0.5)
    np.testing.assert_allclose(sigmoid[0], 1 / (1 + np.exp(4.0)))
    with pytest.raises(DicomPixelError, match="VOI LUT Function"):
        window(x, 100.0, 100.0, function="CUBIC")


def test_voi_lut_sequence_and_sigmoid_on_real_file(dicom_dir: Path) -> None:
    ds = pydicom.dcmread(dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm")
    windowed = dicom_to_display(ds)
    ds.VOILUTFunction = "SIGMOID"
    sig = dicom_to_display(ds)
    assert not np.allclose(sig, windowed)
    assert np.corrcoef(sig.ravel(), windowed.ravel())[0, 1] > 0.95
    # A VOI LUT Sequence takes precedence over the window: an inverting ramp flips the image.
    item = pydicom.Dataset()
    item.LUTDescriptor = [1024, 0, 10]
    item.LUTData = list(range(1023, -1, -1))
    ds.VOILUTSequence = pydicom.Sequence([item])
    flipped = dicom_to_display(ds)
    lungs, mediastinum = lungs_and_mediastinum(flipped)
    assert lungs > mediastinum
    raw = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(flipped, raw / 1023.0, atol=1e-6)  # MONOCHROME1: 1 - (1023 - x)/1023


def test_rescale_slope_and_intercept_are_applied(dicom_dir: Path) -> None:
    ds = pydicom.dcmread(dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm")
    reference = dicom_to_display(ds)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.WindowCenter, ds.WindowWidth = 2 * 550 - 100 + 0.5, 2 * 1024 - 1  # same window in new units
    np.testing.assert_allclose(dicom_to_display(ds), reference, atol=2e-3)


def test_corrupt_file_raises_clear_error(dicom_dir: Path, tmp_path: Path) -> None:
    data = (dicom_dir / "pylibjpeg-data__966_fixed.dcm").read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(DicomPixelError, match="truncated or corrupt"):
        read_dicom_display(str(truncated))
    native = (dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm").read_bytes()
    short = tmp_path / "short.dcm"
    short.write_bytes(native[: len(native) - 5000])  # uncompressed pixels cut short
    with pytest.raises(DicomPixelError, match="cannot"):
        read_dicom_display(str(short))
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    with pytest.raises(DicomPixelError):
        read_dicom_display(str(garbage))
    ds = pydicom.dcmread(dicom_dir / "highdicom__dx_image.dcm")
    del ds.PixelData
    with pytest.raises(DicomPixelError, match="no Pixel Data"):
        dicom_to_display(ds)
