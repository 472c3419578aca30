"""Wall time of one app run per study against the model's time alone: the application's overhead.

For each synthetic two-series study (uar.synthetic.dicom, transfer syntaxes cycling through
the generator's list) it measures, after warm-up and with one already loaded generator:

- ``app``: ``plugin.runner.run_app`` wall time (graph build, DICOM read + decode, view selection,
  inference, SR write);
- ``model``: ``ReportGenerator.generate`` alone on the same decoded frontal / lateral images;
- ``overhead = app - model`` (target <= 0.5 s per study), and its part that is not reading and
  decoding the DICOM files (``load_studies`` timed on its own).

Usage: ``python benchmarks/app_overhead.py [--studies 10] [--size 1024] [--model PATH]``. Without
``--model`` the embedded default model is used when present, else a tiny random model (the
overhead does not depend on the model; the model time does).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.helpers

from operators.inference import load_generator
from operators.study_loader import CXRStudy, load_studies
from plugin.runner import run_app
from plugin.settings import AppSettings
from tests.helpers.tiny import make_tiny_checkpoint
from uar.generator import default_checkpoint_path
from uar.synthetic.dicom import TRANSFER_SYNTAXES, write_study
from uar.synthetic.sampling import sample_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: embedded default)")
    parser.add_argument("--beam-size", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None and not default_checkpoint_path().is_file():
            model = make_tiny_checkpoint(root / "tiny.safetensors")
            print("embedded default model absent: using a tiny random model")
        generator = load_generator(model)
        print(
            f"model {generator.name} {generator.version}; {args.studies} studies of 2 x {args.size}^2 pixels"
        )
        dirs = []
        for i in range(args.studies + 1):  # study 0 is the warm-up
            case = sample_case(np.random.default_rng(i), seed=i)
            syntax = TRANSFER_SYNTAXES[i % len(TRANSFER_SYNTAXES)]
            write_study(root / f"in{i}", case, i, size=args.size, transfer_syntax=syntax)
            dirs.append(root / f"in{i}")

        settings = AppSettings(beam_size=args.beam_size)
        run_app(dirs[0], root / "out0", generator=generator, settings=settings)  # warm-up
        rows = []
        for i, folder in enumerate(dirs[1:], start=1):
            start = time.perf_counter()
            result = run_app(folder, root / f"out{i}", generator=generator, settings=settings)
            app_s = time.perf_counter() - start
            assert len(result.srs) == 1, result.rejections
            start = time.perf_counter()
            [study] = load_studies(folder)
            load_s = time.perf_counter() - start
            assert isinstance(study, CXRStudy) and study.lateral is not None
            start = time.perf_counter()
            generator.generate(study.frontal.pixels, study.lateral.pixels, beam_size=args.beam_size)
            model_s = time.perf_counter() - start
            syntax = TRANSFER_SYNTAXES[i % len(TRANSFER_SYNTAXES)].keyword
            rows.append((app_s, model_s, result.reports[0].seconds, load_s))
            overhead = app_s - model_s
            times = (
                f"app {app_s:.3f}  model {model_s:.3f}  overhead {overhead:.3f}  (load+decode {load_s:.3f})"
            )
            print(f"  study {i:2d} {syntax:<26} {times} s")

    app_med = statistics.median(r[0] for r in rows)
    model_med = statistics.median(r[1] for r in rows)
    in_app_med = statistics.median(r[2] for r in rows)
    overheads = [r[0] - r[1] for r in rows]
    rest = statistics.median(r[0] - r[1] - r[3] for r in rows)
    print(f"median app    {app_med:.3f} s/study")
    print(f"median model  {model_med:.3f} s/study alone ({in_app_med:.3f} s inside the app)")
    overhead_med, overhead_max = statistics.median(overheads), max(overheads)
    print(f"overhead      median {overhead_med:.3f} s, max {overhead_max:.3f} s per study (target <= 0.5 s)")
    print(f"  of which graph + selection + SR writing (overhead - load/decode): median {rest:.3f} s")


if __name__ == "__main__":
    main()
