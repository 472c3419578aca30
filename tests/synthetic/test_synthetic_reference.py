"""Pinned reference: the exact bytes of ``uar data synthetic`` and the embedded model's reports.

``reference.json`` beside this file holds

- ``dataset``: the SHA-256 of every file written by ``uar data synthetic --n 12 --seed 3
  --dicom-size 256`` (256 px PNGs; DICOM at half the default size, to keep the test lean) in four
  variants: with and without ``--dicom``, with and without ``--corpus`` (the IU-Xray
  ``annotation.json`` of the shared data). Every byte is seeded:
  the DICOM UIDs, patient and study attributes come from the seed and the case, so whole files are
  pinned, not only their pixels. The hashes also depend on the pinned encoder versions (Pillow's
  zlib for PNG; pyjpegls, pylibjpeg-openjpeg and pydicom for compressed DICOM) and on
  ``uar.__version__`` (Implementation Version Name, Software Versions). They do not depend on the
  CPU: the renderer's transcendental functions go through ``uar.synthetic.fmath``, so the AVX-512
  and AVX2 machines that run CI write the same pixels (``test_synthetic_render.py``).
- ``reports``: the embedded default model's reports (beam 3) on the first cases of seed 3,
  rendered at 256 px, with the SHA-256 of the model file they came from.

A refactor of the renderer, report composer, DICOM writer or decoder must keep all of them. A
deliberate change (a new default model, a new rendering) re-records them with
``PYTHONPATH=. python -m tests.synthetic.test_synthetic_reference`` and says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from uar.cli import main
from uar.generator import ReportGenerator, default_checkpoint_path
from uar.synthetic.render import render
from uar.synthetic.sampling import sample_case

REFERENCE = Path(__file__).with_name("reference.json")
N, SEED, DICOM_SIZE = 12, 3, 256
VARIANTS: dict[str, tuple[bool, bool]] = {  # name: (--corpus, --dicom)
    "plain": (False, False),
    "dicom": (False, True),
    "corpus": (True, False),
    "corpus_dicom": (True, True),
}
REPORT_CASES = 4


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, keyed by its POSIX path relative to ``root``."""
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def write_variant(out: Path, corpus: Path | None, dicom: bool) -> Path:
    """Run ``uar data synthetic --n 12 --seed 3 --dicom-size 256`` in-process into ``out``."""
    argv = ["data", "synthetic", "--n", str(N), "--seed", str(SEED), "--dicom-size", str(DICOM_SIZE)]
    argv += ["--out", str(out)]
    if corpus is not None:
        argv += ["--corpus", str(corpus)]
    if dicom:
        argv.append("--dicom")
    assert main(argv) == 0
    return out


def embedded_reports() -> dict[str, Any]:
    """The embedded model's reports on the first :data:`REPORT_CASES` cases of seed 3 (256 px)."""
    path = default_checkpoint_path()
    gen = ReportGenerator.load(None)
    studies = []
    for i in range(REPORT_CASES):
        case = sample_case(np.random.default_rng([SEED, i]))
        studies.append((render(case, "frontal"), render(case, "lateral")))
    reports = gen.generate_batch(studies, beam_size=3)
    return {
        "model_sha256": _sha256(path),
        "cases": [
            {"case": [SEED, i], "findings": r.findings, "impression": r.impression, "token_ids": r.token_ids}
            for i, r in enumerate(reports)
        ],
    }


def record(corpus: Path, work: Path) -> dict[str, Any]:
    """Compute the whole reference (dataset hashes of every variant and the embedded reports)."""
    dataset = {
        name: file_hashes(write_variant(work / name, corpus if use_corpus else None, dicom))
        for name, (use_corpus, dicom) in VARIANTS.items()
    }
    return {"dataset": dataset, "reports": embedded_reports()}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_synthetic_dataset_bytes_are_pinned(variant, reference, tmp_path, shared_data):
    use_corpus, dicom = VARIANTS[variant]
    corpus = shared_data / "iu_xray" / "annotation.json" if use_corpus else None
    got = file_hashes(write_variant(tmp_path / variant, corpus, dicom))
    want = reference["dataset"][variant]
    assert sorted(got) == sorted(want)
    changed = sorted(name for name in want if got[name] != want[name])
    assert not changed, f"{len(changed)} files changed bytes, e.g. {changed[:5]}"


def test_embedded_model_reports_are_pinned(reference):
    want = reference["reports"]
    model_sha = _sha256(default_checkpoint_path())
    assert model_sha == want["model_sha256"], (
        "the embedded default model was replaced: re-record the pinned reports with "
        "`PYTHONPATH=. python -m tests.synthetic.test_synthetic_reference`"
    )
    assert embedded_reports()["cases"] == want["cases"]


if __name__ == "__main__":  # re-record reference.json (a deliberate change only)
    import tempfile

    from tests.conftest import SHARED_DATA

    with tempfile.TemporaryDirectory() as tmp:
        ref = record(SHARED_DATA / "iu_xray" / "annotation.json", Path(tmp))
    REFERENCE.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {REFERENCE}", file=sys.stderr)
