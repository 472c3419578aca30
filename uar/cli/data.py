"""``uar data``: data set tools.

Examples::

    uar data synthetic --n 2000 --seed 1 --out data/synth
    uar data synthetic --n 500 --seed 99 --out data/synth-test \\
        --corpus ../shared/data/iu_xray/annotation.json
    uar data synthetic --n 20 --seed 3 --out data/synth-dicom --dicom --dicom-size 512

``synthetic`` writes synthetic chest radiographs with known findings in the R2Gen layout
(``annotation.json`` with a ``labels`` object per study, PNG images) and, with ``--dicom``, one
two-series DICOM study per case; see docs/synthetic-data.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

from uar.synthetic.dataset import write_dataset

log = logging.getLogger(__name__)


def _fractions(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected three comma-separated fractions, e.g. 0.7,0.1,0.2")
    return parts[0], parts[1], parts[2]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` sub-command and its ``synthetic`` action."""
    p = subparsers.add_parser("data", help="data set tools (synthetic chest radiographs)")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = sub.add_parser(
        "synthetic",
        help="write synthetic chest radiographs with known findings and composed reports",
        description="Write N synthetic studies (frontal + lateral PNGs, report, 14 labels) in the "
        "R2Gen layout; optionally DICOM studies too.",
    )
    s.add_argument("--n", type=int, required=True, help="number of studies")
    s.add_argument("--seed", type=int, required=True, help="random seed (same seed, same bytes)")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="R2Gen annotation.json whose report sentences are reused (split by split); "
        "default: built-in sentences",
    )
    s.add_argument("--dicom", action="store_true", help="also write DICOM studies under OUT/dicom")
    s.add_argument("--size", type=int, default=256, help="PNG size in pixels (default 256)")
    s.add_argument("--dicom-size", type=int, default=512, help="DICOM image size in pixels (default 512)")
    s.add_argument(
        "--splits",
        type=_fractions,
        default=(0.7, 0.1, 0.2),
        help="train,val,test fractions (default 0.7,0.1,0.2)",
    )
    s.set_defaults(func=run_synthetic)


def run_synthetic(args: argparse.Namespace) -> int:
    """Write the synthetic data set and log its split sizes and label prevalences."""
    path = write_dataset(
        args.out,
        args.n,
        args.seed,
        corpus=args.corpus,
        dicom=args.dicom,
        splits=args.splits,
        size=args.size,
        dicom_size=args.dicom_size,
    )
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = [e for split in data.values() for e in split]
    positives = Counter(k for e in entries for k, v in e["labels"].items() if v == 1)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.items())
    log.info("wrote %s (%s)", path, sizes)
    for name, count in positives.most_common():
        log.info("  %-27s %5.1f %%", name, 100.0 * count / len(entries))
    return 0
