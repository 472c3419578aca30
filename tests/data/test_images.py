"""Image loading by content and the train / inference transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uar.data.dicom_pixels import read_dicom_display
from uar.data.images import (
    IMAGE_SUFFIXES,
    ImageLoadError,
    crop,
    find_images,
    load_image,
    to_tensor,
    train_resize,
    train_transform,
)


@pytest.fixture(scope="module")
def png_path(shared_data: Path) -> Path:
    return sorted((shared_data / "covid_chestxray" / "images").glob("*.png"))[0]


def test_png_loads_as_unit_float(png_path: Path) -> None:
    img = load_image(png_path)
    ref = np.asarray(Image.open(png_path), dtype=np.float32) / 255.0
    assert img.dtype == np.float32 and img.ndim == 2
    np.testing.assert_allclose(img, ref, atol=1e-6)


def test_sniffing_ignores_file_names(png_path: Path, dicom_dir: Path, tmp_path: Path) -> None:
    ref = load_image(png_path)
    disguised = tmp_path / "image.dcm"  # PNG content behind a DICOM name
    disguised.write_bytes(png_path.read_bytes())
    np.testing.assert_array_equal(load_image(disguised), ref)
    dicom = dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm"
    no_suffix = tmp_path / "IM0001"
    no_suffix.write_bytes(dicom.read_bytes())
    np.testing.assert_array_equal(load_image(no_suffix), read_dicom_display(str(dicom)))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageLoadError, match="not a PNG, JPEG or DICOM"):
        load_image(text)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_sixteen_bit_png_rgb_and_jpeg(png_path: Path, tmp_path: Path) -> None:
    ref = load_image(png_path)
    sixteen = tmp_path / "x16.png"
    Image.fromarray((ref * 65535).round().astype(np.uint16)).save(sixteen)
    np.testing.assert_allclose(load_image(sixteen), ref, atol=1e-4)
    rgb = tmp_path / "rgb.png"
    grey8 = (ref * 255).round().astype(np.uint8)
    Image.fromarray(np.stack([grey8] * 3, axis=-1)).save(rgb)
    np.testing.assert_allclose(load_image(rgb), ref, atol=1e-5)
    jpeg = tmp_path / "x.jpg"
    Image.fromarray(grey8).save(jpeg, quality=95)
    assert np.abs(load_image(jpeg) - ref).mean() < 0.01


def test_transforms_shapes_and_determinism(png_path: Path) -> None:
    img = load_image(png_path)
    t = to_tensor(img, 112)
    assert t.shape == (1, 112, 112) and t.dtype.is_floating_point
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert train_resize(112) == 128
    a = train_transform(img, 112, np.random.default_rng(3))
    b = train_transform(img, 112, np.random.default_rng(3))
    assert a.shape == (1, 112, 112)
    assert bool((a == b).all())
    crops = {tuple(train_transform(img, 112, np.random.default_rng(s))[0, 0, :4].tolist()) for s in range(8)}
    assert len(crops) > 1
    centre = crop(img, 112, 8, 8)
    assert abs(float(centre.mean()) - float(t.mean())) < 0.05
    with pytest.raises(ValueError, match="does not fit"):
        crop(img, 112, 17, 0)


def test_find_images(png_path: Path, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.PNG").write_bytes(png_path.read_bytes())
    (tmp_path / "a" / "y.dcm").write_bytes(b"")
    (tmp_path / "a" / "z.txt").write_text("no")
    found = [p.name for p in find_images(tmp_path)]
    assert found == ["x.PNG", "y.dcm"]
    assert ".png" in IMAGE_SUFFIXES
