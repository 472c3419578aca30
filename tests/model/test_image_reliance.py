"""``benchmarks/image_reliance.py``: own versus another study's visual input, on a tiny checkpoint."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tests.helpers.tiny import make_tiny_checkpoint
from uar.data.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from image_reliance import reliance  # noqa: E402


def test_reliance_of_lsu_and_cnn_models(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "set", 6, seed=4, size=64, splits=(0.0, 0.0, 1.0), progress=False).parent
    for preset in ("uar", "base"):
        ckpt = make_tiny_checkpoint(tmp_path / f"{preset}.safetensors", preset=preset)
        r = reliance(ckpt, data, "test", batch_size=3)
        assert r["n"] == 6 and math.isfinite(r["own"]) and math.isfinite(r["other"])
        assert math.isclose(r["gap"], r["other"] - r["own"])
        if preset == "base":  # images differ between studies (a random VQ-VAE may give one code)
            assert r["own"] != r["other"]
