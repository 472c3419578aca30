"""``uar data synthetic`` and ``write_dataset``: R2Gen layout, determinism, DICOM studies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from uar.cli import main
from uar.eval.labeler import OBSERVATIONS, label_report
from uar.synthetic.dataset import write_dataset

REPO = Path(__file__).resolve().parents[2]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_r2gen_layout_with_dicom(tmp_path, shared_data):
    out = tmp_path / "synth"
    corpus = shared_data / "iu_xray" / "annotation.json"
    code = main(
        [
            "data",
            "synthetic",
            "--n",
            "10",
            "--seed",
            "5",
            "--out",
            str(out),
            "--corpus",
            str(corpus),
            "--dicom",
        ]
        + ["--size", "64", "--dicom-size", "96", "--splits", "0.6,0.2,0.2"]
    )
    assert code == 0
    data = json.loads((out / "annotation.json").read_text(encoding="utf-8"))
    assert {k: len(v) for k, v in data.items()} == {"train": 6, "val": 2, "test": 2}
    for split, entries in data.items():
        for e in entries:
            assert e["split"] == split
            assert list(e["labels"]) == list(OBSERVATIONS)
            assert label_report(e["report"]) == e["labels"]
            for rel in e["image_path"]:
                img = Image.open(out / "images" / rel)
                assert img.mode == "L" and img.size == (64, 64)
            front = pydicom.dcmread(out / "dicom" / e["id"] / "frontal.dcm")
            lat = pydicom.dcmread(out / "dicom" / e["id"] / "lateral.dcm")
            assert front.StudyInstanceUID == lat.StudyInstanceUID
            assert front.pixel_array.shape == (96, 96)
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [c["id"] for c in cases] == [e["id"] for v in data.values() for e in v]


def test_same_seed_same_bytes(tmp_path):
    a = write_dataset(tmp_path / "a", 4, seed=9, size=64, progress=False).parent
    b = write_dataset(tmp_path / "b", 4, seed=9, size=64, progress=False).parent
    c = write_dataset(tmp_path / "c", 4, seed=10, size=64, progress=False).parent
    fa, fb = _files(a), _files(b)
    assert fa == fb
    assert any(name.endswith(".png") for name in fa)
    assert fa["annotation.json"] != _files(c)["annotation.json"]
    png = np.asarray(Image.open(a / "images" / "syn9_000000" / "0.png"))
    assert png.std() > 20  # a real image, not a blank


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fractions"):
        write_dataset(tmp_path, 4, seed=1, splits=(0.5, 0.5, 0.5), progress=False)
    with pytest.raises(ValueError, match="at least 1"):
        write_dataset(tmp_path, 0, seed=1, progress=False)
    with pytest.raises(FileNotFoundError):
        write_dataset(tmp_path, 2, seed=1, corpus=tmp_path / "missing.json", progress=False)


def test_duplicate_floor_benchmark_on_a_written_set(tmp_path):
    root = write_dataset(tmp_path / "set", 24, seed=5, size=64, progress=False).parent
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "duplicate_floor.py"), str(root)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("grouped by positive labels") and "of 24 cases" in lines[0]
    assert lines[1].startswith("grouped by categorical findings")
    assert lines[2].startswith("normal cases")
    # finer descriptions can only split groups: fewer cases share one
    share = [float(line.split(";")[1].split("%")[0]) for line in lines[:2]]
    assert share[1] <= share[0]
