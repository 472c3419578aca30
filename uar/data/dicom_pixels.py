"""DICOM pixel data to a display-ready grey image.

The rendering follows the DICOM grayscale pipeline (PS3.4 N.2.1, PS3.3 C.11):

    stored values -> Modality LUT / Rescale -> VOI LUT or window -> Presentation LUT -> display

and returns what a radiologist would see on a MONOCHROME2 monitor: float32 ``(H, W)`` in
``[0, 1]``, bone and soft tissue bright, air dark.

Polarity rule. A MONOCHROME1 image shows its minimum as white, so it is inverted. For Digital
X-Ray "For Presentation" objects the standard (PS3.3 C.8.11.1.1) requires Presentation LUT Shape
(2050,0020) INVERSE whenever Photometric Interpretation (0028,0004) is MONOCHROME1: both attributes
describe *the same* inversion, so the image is inverted exactly once. MONOCHROME2 with INVERSE is
also inverted once; MONOCHROME2 with IDENTITY (or no shape) is not inverted.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

__all__ = ["DicomPixelError", "dicom_to_display", "read_dicom_display"]

# Percentiles of the fallback window when a file carries neither a VOI LUT nor a window.
FALLBACK_PERCENTILES: tuple[float, float] = (0.5, 99.5)


class DicomPixelError(ValueError):
    """The pixel data of a DICOM dataset cannot be turned into a display image."""


def read_dicom_display(path: str) -> np.ndarray:
    """Read a DICOM file and render it with :func:`dicom_to_display`.

    Raises:
        DicomPixelError: the file is not readable DICOM or its pixels cannot be rendered.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # pydicom raises many types for corrupt files
            raise DicomPixelError(f"cannot read DICOM file: {exc}") from exc
    if "PixelData" not in ds and caught:
        # pydicom drops an element cut short by the end of the file and only warns about it.
        reason = "; ".join(str(w.message) for w in caught)
        raise DicomPixelError(f"cannot read Pixel Data, the file looks truncated or corrupt: {reason}")
    return dicom_to_display(ds)


def dicom_to_display(ds: pydicom.Dataset) -> np.ndarray:
    """Render the first frame of a grey (or colour) DICOM image for display.

    Steps: decode Pixel Data (7FE0,0010) with the installed decoders (pylibjpeg for JPEG baseline /
    lossless and JPEG 2000, pyjpegls for JPEG-LS, pydicom for native encodings); apply the Modality LUT
    Sequence (0028,3000) or Rescale Slope/Intercept (0028,1053/1052); apply the first item of the VOI
    LUT Sequence (0028,3010), else the first Window Center/Width (0028,1050/1051) value with the VOI LUT
    Function (0028,1056) LINEAR, LINEAR_EXACT or SIGMOID, else a percentile window; invert for
    MONOCHROME1 or Presentation LUT Shape INVERSE (once). Colour images (RGB, YBR_*) are converted to
    luminance and scaled by their bit depth.

    Returns:
        float32 array (H, W) in [0, 1], display polarity (air dark).

    Raises:
        DicomPixelError: no pixel data, unsupported photometric interpretation, undecodable pixels.
    """
    if "PixelData" not in ds:
        raise DicomPixelError("dataset has no Pixel Data (7FE0,0010)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoder plugins raise RuntimeError, ValueError, OSError...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DicomPixelError(f"cannot decode pixel data (transfer syntax {syntax}): {exc}") from exc

    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]  # (H, W) or (H, W, 3): first frame only
    if samples == 3 or photometric.startswith(("RGB", "YBR")):
        return _colour_to_display(ds, pixels)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomPixelError(f"unsupported Photometric Interpretation {photometric!r}")
    if pixels.ndim != 2:
        raise DicomPixelError(f"expected a 2-D grey frame, got pixel array of shape {pixels.shape}")

    values = apply_modality_lut(pixels, ds).astype(np.float64)  # (H, W) modality units
    display = _apply_voi(values, ds)  # (H, W) in [0, 1], 1 = maximum VOI output
    shape = str(ds.get("PresentationLUTShape", "IDENTITY")).strip().upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        display = 1.0 - display
    return np.ascontiguousarray(display, dtype=np.float32)


def _apply_voi(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """VOI transformation of modality values ``(H, W)`` to ``[0, 1]`` (PS3.3 C.11.2)."""
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq:
        return _apply_voi_lut_item(values, voi_seq[0])
    center, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        return window(values, center, width, function)
    lo, hi = np.percentile(values, FALLBACK_PERCENTILES)
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window Center/Width mapping of modality values onto ``[0, 1]``.

    ``function`` is the VOI LUT Function (0028,1056):

    - ``LINEAR`` (PS3.3 C.11.2.1.2.1): 0 if ``x <= c - 0.5 - (w - 1) / 2``, 1 if
      ``x > c - 0.5 + (w - 1) / 2``, else ``(x - (c - 0.5)) / (w - 1) + 0.5``; requires ``w >= 1``.
    - ``LINEAR_EXACT`` (C.11.2.1.3.2): ``(x - c) / w + 0.5`` clipped; requires ``w > 0``.
    - ``SIGMOID`` (C.11.2.1.3.1): ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    function = function.upper()
    if function == "LINEAR":
        if width < 1:
            raise DicomPixelError(f"Window Width {width} < 1 is invalid for the LINEAR function")
        if width == 1:
            return (values > center - 0.5).astype(np.float64)
        out = (values - (center - 0.5)) / (width - 1) + 0.5
    elif function == "LINEAR_EXACT":
        out = (values - center) / width + 0.5
    elif function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    else:
        raise DicomPixelError(f"unsupported VOI LUT Function {function!r}")
    return np.clip(out, 0.0, 1.0)


def _apply_voi_lut_item(values: np.ndarray, item: pydicom.Dataset) -> np.ndarray:
    """Apply one VOI LUT Sequence item (LUT Descriptor (0028,3002), LUT Data (0028,3006))."""
    try:
        n_entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
        lut = np.asarray(item.LUTData, dtype=np.float64).ravel()  # (n_entries,)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomPixelError(f"malformed VOI LUT Sequence item: {exc}") from exc
    n_entries = n_entries or 65536  # PS3.3 C.11.1.1.1: 0 means 2**16 entries
    lut = lut[:n_entries]
    if lut.size == 0:
        raise DicomPixelError("VOI LUT Sequence item has empty LUT Data")
    # Some writers declare fewer bits than the data uses; scale by what the data needs.
    max_out = max(2.0**bits - 1.0, 2.0 ** np.ceil(np.log2(lut.max() + 1.0)) - 1.0)
    index = np.clip(np.rint(values - first_mapped), 0, lut.size - 1).astype(np.int64)
    return lut[index] / max_out


def _colour_to_display(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R BT.601) of an RGB frame ``(H, W, 3)``, scaled to ``[0, 1]``."""
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise DicomPixelError(f"expected an (H, W, 3) colour frame, got shape {pixels.shape}")
    bits = int(ds.get("BitsStored", 8))
    rgb = pixels.astype(np.float64) / (2.0**bits - 1.0)
    grey = rgb @ np.array([0.299, 0.587, 0.114])  # (H, W)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def _first_value(value: object) -> float | None:
    """First value of a possibly multi-valued DS attribute, or None."""
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
