"""The app against a few hundred mutated copies of the real chest files (seeded, bounded in time).

Invariants: every study ends in an SR that passes dciodvfy or in a rejection record; output names
are our own (generated UIDs or hashes); nothing is written outside the output folder; no received
value (canary strings) reaches a log line, stderr or a rejection record; a study with good and bad
instances is reported from the good ones; ``python -m plugin`` never ends in a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from operators.sr_writer import section_text
from operators.study_loader import CXRStudy, load_studies
from plugin.runner import run_app
from plugin.settings import AppSettings
from tests.conftest import REPO, require_tool
from tests.fuzz.conftest import OUTPUT_NAME, leaks
from tests.fuzz.mutations import Mutator, deflate_bomb, encode_dataset, lax_pydicom, part10, sequence_bomb
from uar.generator import ReportGenerator

N_IN_PROCESS = 250
N_CLI = 40
FRONTAL = "dwv__gdcm-CR-MONO1-10-chest.dcm"


def write_mutants(mutator: Mutator, folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"m{i:04d}.dcm").write_bytes(mutator.mutant().file_bytes)


def write_mixed_study(mutator: Mutator, folder: Path, dicom_dir: Path) -> str:
    """A good chest image without ViewPosition plus bad PA instances, one study."""
    study_uid = generate_uid()
    with lax_pydicom():
        base = pydicom.dcmread(dicom_dir / FRONTAL)
        good = mutator.fresh(base, study_uid)
        del good.ViewPosition
        bad = []
        for damage in ("half_pixels", "rows0", "bits7", "palette", "jpeg_label", "multivalue_series"):
            ds = mutator.fresh(base, study_uid)
            ds.ViewPosition = "PA"
            syntax = str(ds.file_meta.TransferSyntaxUID)
            if damage == "half_pixels":
                ds.PixelData = bytes(ds.PixelData)[: len(ds.PixelData) // 2]
            elif damage == "rows0":
                ds.Rows = 0
            elif damage == "bits7":
                ds.BitsAllocated = 7
            elif damage == "palette":
                ds.PhotometricInterpretation = "PALETTE COLOR"
            elif damage == "jpeg_label":
                syntax = "1.2.840.10008.1.2.4.50"
            else:
                ds["SeriesInstanceUID"].value = ["1.2.3", "1.2.4"]
            bad.append((damage, ds, syntax))
        for name, ds, syntax in [("good", good, str(good.file_meta.TransferSyntaxUID)), *bad]:
            raw = encode_dataset(ds, syntax if syntax != "1.2.840.10008.1.2.4.50" else "1.2.840.10008.1.2.1")
            (folder / f"mixed_{name}.dcm").write_bytes(part10(ds, raw, syntax))
    return study_uid


def check_outputs(in_dir: Path, out_dir: Path, n_files: int) -> tuple[list[Path], list[dict]]:
    """Every input file is accounted for by an SR or a rejection; only our own names; no leaks."""
    names = sorted(p.name for p in out_dir.iterdir())
    assert all(OUTPUT_NAME.fullmatch(n) for n in names), [n for n in names if not OUTPUT_NAME.fullmatch(n)]
    srs = sorted(out_dir.glob("SR_*.dcm"))
    records = [json.loads(p.read_text()) for p in sorted(out_dir.glob("rejection_*.json"))]
    for p in out_dir.glob("rejection_*.json"):
        assert leaks(p.read_text()) == [], p.name
    covered = {f for r in records for f in r["files"]}
    sr_studies = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in srs}
    with lax_pydicom():
        for f in sorted(in_dir.iterdir()):
            if f.name in covered:
                continue
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            assert str(ds.StudyInstanceUID) in sr_studies, f"{f.name}: neither an SR nor a rejection"
    assert len(list(in_dir.iterdir())) == n_files  # nothing written into the input
    return srs, records


def dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, errors="replace"
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.slow
def test_app_in_process_fuzz(
    mutator: Mutator,
    dicom_dir: Path,
    tiny_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    write_mutants(mutator, in_dir, N_IN_PROCESS)
    (in_dir / "bomb.dcm").write_bytes(deflate_bomb(mutator).file_bytes)
    (in_dir / "items.dcm").write_bytes(sequence_bomb(mutator, 150_000).file_bytes)
    mixed_uid = write_mixed_study(mutator, in_dir, dicom_dir)
    n_files = len(list(in_dir.iterdir()))
    caplog.set_level(logging.DEBUG)
    result = run_app(
        in_dir, out_dir, generator=ReportGenerator.load(tiny_model), settings=AppSettings(beam_size=1)
    )
    srs, records = check_outputs(in_dir, out_dir, n_files)
    assert len(srs) == len(result.srs) > 20 and len(records) == len(result.rejections) > 100
    bad = {p.name: dciodvfy_errors(p) for p in srs}
    assert {k: v for k, v in bad.items() if v} == {}
    mixed = [p for p in srs if pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID == mixed_uid]
    assert len(mixed) == 1, "the mixed study is reported from its good instance"
    summary = section_text(pydicom.dcmread(mixed[0]).ContentSequence[-1])
    assert "6 image instances were in the study but could not be used for this report (" in summary
    leaked = [
        f"{r.name}:{r.pathname}:{r.lineno}: {r.getMessage()}" for r in caplog.records if leaks(r.getMessage())
    ]
    assert leaked == []
    captured = capfd.readouterr()
    assert leaks(captured.out + captured.err) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing outside the output


def test_mixed_study_sets_bad_instances_aside(mutator: Mutator, dicom_dir: Path, tmp_path: Path) -> None:
    write_mixed_study(mutator, tmp_path, dicom_dir)
    [study] = load_studies(tmp_path)
    assert isinstance(study, CXRStudy), study
    assert study.frontal.path.name == "mixed_good.dcm"
    reasons = dict(study.set_aside)
    assert sorted(reasons) == sorted(
        f"mixed_{n}.dcm"
        for n in ("half_pixels", "rows0", "bits7", "palette", "jpeg_label", "multivalue_series")
    )
    assert "SeriesInstanceUID is not a valid UID" in reasons["mixed_multivalue_series.dcm"]
    statement = study.set_aside_statement()
    assert statement.startswith("6 image instances were in the study but could not be used")
    assert "SeriesInstanceUID is not a valid UID" in statement and "mixed_" not in statement
    assert statement.endswith(").")


def test_received_uids_never_become_paths(mutator: Mutator, dicom_dir: Path, tmp_path: Path) -> None:
    from operators.study_loader import Rejection, write_rejection

    for uid in ("1.2.3/../RELTRAV", "9" * 65536, "1.2.\x00/x"):
        path = write_rejection(Rejection(uid, "test", []), tmp_path / "out")
        assert path.parent == tmp_path / "out" and OUTPUT_NAME.fullmatch(path.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_app_cli_fuzz(mutator: Mutator, tiny_model: Path, tmp_path: Path) -> None:
    """``python -m plugin`` as a MAP runs it: exit 0, no traceback, no received value on stderr."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    write_mutants(mutator, in_dir, N_CLI)
    for kind in (
        "deep_sequence",
        "lying_syntax",
        "bad_uid",
        "unknown_sop_class",
        "canary_text",
        "corrupt_meta_length",
    ):
        for i in range(3):
            (in_dir / f"{kind}{i}.dcm").write_bytes(mutator.mutant(kind).file_bytes)
    n_files = len(list(in_dir.iterdir()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "plugin", "-i", str(in_dir), "-o", str(out_dir), "-m", str(tiny_model)]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, errors="replace", timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert leaks(output) == [], [line for line in output.splitlines() if leaks(line)][:5]
    srs, _ = check_outputs(in_dir, out_dir, n_files)
    assert {p.name: e for p in srs if (e := dciodvfy_errors(p))} == {}
