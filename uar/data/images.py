"""Image files to model inputs.

``load_image`` reads PNG, JPEG and DICOM files (recognised by content, not by name) into the
package-wide image convention: float32 ``(H, W)`` in ``[0, 1]``, display polarity. ``to_tensor`` and
``train_transform`` turn such an array into a model input ``(1, S, S)``.

Augmentation follows the R2Gen family scaled to UAR's input (uar-paper.md §6 row 12): training
resizes to ``S * 8 / 7`` (128 for S = 112) and takes a random ``S`` crop; inference resizes straight
to ``S``. No horizontal flip: it mirrors the heart and is clinically questionable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from uar.data.dicom_pixels import read_dicom_display

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageLoadError",
    "crop",
    "find_images",
    "load_image",
    "random_crop_offset",
    "resize",
    "to_tensor",
    "train_resize",
    "train_transform",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601


class ImageLoadError(ValueError):
    """An image file cannot be read or is not a supported format."""


def _sniff(path: Path) -> str:
    """Return "png", "jpeg", "dicom" or "unknown" from the first bytes of ``path``."""
    with path.open("rb") as f:
        head = f.read(132)
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[128:132] == b"DICM":
        return "dicom"
    return "unknown"


def load_image(path: str | Path) -> np.ndarray:
    """Load a radiograph as float32 ``(H, W)`` in ``[0, 1]``, display polarity.

    The format is recognised by content: PNG (8 or 16 bit, grey, RGB, palette, with or without alpha),
    JPEG, or DICOM Part 10 (rendered by :func:`uar.data.dicom_pixels.dicom_to_display`). A file with
    a DICOM suffix but no Part 10 preamble is read as raw DICOM. Colour images become luminance.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageLoadError: the content is not a supported image (DicomPixelError for DICOM problems).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    kind = _sniff(path)
    if kind == "dicom" or (kind == "unknown" and path.suffix.lower() in (".dcm", ".dicom")):
        return read_dicom_display(str(path))
    if kind == "unknown":
        raise ImageLoadError(f"{path.name}: not a PNG, JPEG or DICOM file")
    try:
        with Image.open(path) as im:
            im.load()
            return _pil_to_array(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageLoadError(f"{path.name}: cannot decode {kind.upper()} image: {exc}") from exc


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """PIL image to float32 ``(H, W)`` in ``[0, 1]`` (alpha dropped, colour to luminance)."""
    if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif im.mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit PNGs open as "I;16" (uint16) or "I" (int32 holding 0..65535).
        img = arr.astype(np.float64) / 65535.0
    elif im.mode == "F":
        lo, hi = float(arr.min()), float(arr.max())
        img = (arr.astype(np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(arr.shape)
    else:
        img = arr.astype(np.float64) / 255.0
        if img.ndim == 3:
            channels = img.shape[-1]
            if channels in (3, 4):  # RGB / RGBA
                img = img[..., :3] @ _LUMA
            elif channels == 2:  # LA
                img = img[..., 0]
            else:
                raise ImageLoadError(f"unsupported image with {channels} channels")
    if img.ndim != 2:
        raise ImageLoadError(f"unsupported image mode {im.mode!r} of shape {arr.shape}")
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def find_images(root: str | Path) -> Iterator[Path]:
    """Yield image files under ``root`` (recursive, sorted) whose suffix is in IMAGE_SUFFIXES."""
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            yield p


def resize(img: np.ndarray, size: int) -> torch.Tensor:
    """Resize ``(H, W)`` to a ``(1, size, size)`` float32 tensor (bilinear, antialiased).

    The aspect ratio is not kept (R2Gen resizes straight to a square, uar-paper.md §6 row 12).
    """
    if img.ndim != 2:
        raise ValueError(f"expected a grey image (H, W), got shape {img.shape}")
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]  # (1, 1, H, W)
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp_(0.0, 1.0)  # (1, size, size)


def to_tensor(img: np.ndarray, size: int) -> torch.Tensor:
    """Inference transform: ``(H, W)`` in [0, 1] -> tensor ``(1, size, size)``."""
    return resize(img, size)


def train_resize(size: int) -> int:
    """Side of the training resize before the random crop: ``size * 8 / 7`` (112 -> 128)."""
    return round(size * 8 / 7)


def random_crop_offset(size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Draw a crop position ``(top, left)`` of a ``size`` crop inside the ``train_resize(size)`` image."""
    margin = train_resize(size) - size
    top, left = rng.integers(0, margin + 1, size=2)
    return int(top), int(left)


def crop(img: np.ndarray, size: int, top: int, left: int) -> torch.Tensor:
    """Resize ``(H, W)`` to ``train_resize(size)`` and cut the ``size`` crop at ``(top, left)``."""
    big = train_resize(size)
    if not (0 <= top <= big - size and 0 <= left <= big - size):
        raise ValueError(f"crop ({top}, {left}) of {size} does not fit in {big}x{big}")
    t = resize(img, big)  # (1, big, big)
    return t[:, top : top + size, left : left + size].contiguous()  # (1, size, size)


def train_transform(img: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Training transform: resize to ``size * 8 / 7`` then random ``size`` crop -> ``(1, size, size)``.

    Deterministic for a given ``rng`` state.
    """
    top, left = random_crop_offset(size, rng)
    return crop(img, size, top, left)
