"""Speed of the synthetic data generator (docs/benchmarks.md, section "Synthetic data").

Measures, on one core, the median time to render one view at 112 / 256 / 512 px, to compose one
report from the IU-Xray corpus, to write one DICOM study per transfer syntax (512 px), and the
throughput of ``write_dataset`` (two 256-px PNGs + report per study).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synthetic.py [--cases 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from uar.data.report_composer import SentenceBank, compose_report
from uar.data.synthetic import render, sample_case, write_dataset
from uar.data.synthetic_dicom import TRANSFER_SYNTAXES, write_study

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iu_xray" / "annotation.json"


def _median_ms(fn, items) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=40)
    args = ap.parse_args()
    cases = [sample_case(np.random.default_rng([0, i])) for i in range(args.cases)]
    render(cases[0], "frontal", size=64)  # warm-up
    print("| what | median per item |")
    print("|---|---|")
    for size in (112, 256, 512):
        for view in ("frontal", "lateral"):
            ms = _median_ms(lambda c, v=view, s=size: render(c, v, size=s), cases)
            print(f"| render {view} {size} px | {ms:.1f} ms |")
    if CORPUS.is_file():
        t0 = time.perf_counter()
        bank = SentenceBank.from_annotation(CORPUS, "train")
        print(f"| index IU-Xray train sentences (once) | {1000 * (time.perf_counter() - t0):.0f} ms |")
        rng = np.random.default_rng(0)
        ms = _median_ms(lambda c: compose_report(c, bank, rng), cases)
        print(f"| compose report (IU-Xray corpus) | {ms:.1f} ms |")
    rng = np.random.default_rng(0)
    ms = _median_ms(lambda c: compose_report(c, None, rng), cases)
    print(f"| compose report (built-in sentences) | {ms:.1f} ms |")
    with tempfile.TemporaryDirectory() as tmp:
        for syntax in TRANSFER_SYNTAXES:
            ms = _median_ms(
                lambda c, s=syntax: write_study(Path(tmp) / "s", c, 0, size=512, transfer_syntax=s), cases[:8]
            )
            print(f"| DICOM study 512 px, {syntax.name} | {ms:.0f} ms |")
        t0 = time.perf_counter()
        write_dataset(Path(tmp) / "ds", args.cases, seed=0, progress=False)
        per = (time.perf_counter() - t0) / args.cases
        print(
            f"| write_dataset, 256 px PNGs + report | {1000 * per:.0f} ms/study ({1 / per:.1f} studies/s) |"
        )


if __name__ == "__main__":
    main()
