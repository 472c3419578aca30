"""``uar generate``: write the draft report of one study from a frontal (and lateral) image.

Examples::

    uar generate frontal.png lateral.png
    uar generate study/IM0001.dcm --checkpoint runs/iu/best.safetensors --beam 3 --json

Images are PNG, JPEG or DICOM files (recognised by content). Without ``--checkpoint`` the embedded
default model is used. The impression is derived from the generated findings by the rule-based
labeler, not generated. The input-domain verdict (docs/ood.md) is printed with the report:
``in_domain`` / ``out_of_domain`` with score and threshold, or ``unchecked`` for a model without
calibration data; ``--withhold`` prints no findings for an out-of-domain study (as the node's
default policy does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from uar.data.images import load_image
from uar.generator import ReportGenerator


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` sub-command."""
    p = subparsers.add_parser(
        "generate",
        help="write a draft report for a frontal (and optional lateral) image",
        description="Generate the findings of one chest X-ray study and a derived impression.",
    )
    p.add_argument(
        "images", nargs="+", type=Path, metavar="PATH", help="frontal image, then optional lateral"
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="model file (default: embedded model)")
    p.add_argument("--beam", type=int, default=3, help="beam size; 1 = greedy (default: 3)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--int8", action="store_true", help="decode with int8 weight copies (faster; wording may differ)"
    )
    p.add_argument(
        "--withhold",
        action="store_true",
        help="write no findings when the image is outside the model's validated input domain",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate and print the report; returns the exit code."""
    if len(args.images) > 2:
        raise ValueError(f"give one frontal and at most one lateral image, got {len(args.images)} paths")
    if args.beam < 1:
        raise ValueError(f"--beam must be >= 1, got {args.beam}")
    frontal = load_image(args.images[0])
    lateral = load_image(args.images[1]) if len(args.images) == 2 else None
    generator = ReportGenerator.load(args.checkpoint)
    report = generator.generate(
        frontal, lateral, beam_size=args.beam, int8=args.int8, withhold_out_of_domain=args.withhold
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(report)))
        return 0
    domain = report.domain
    if domain.out_of_domain:
        print("WARNING: OUTSIDE THE MODEL'S VALIDATED INPUT DOMAIN. " + domain.statement())
    print(f"FINDINGS: {report.findings}")
    label = "IMPRESSION" if report.withheld else "IMPRESSION (derived from the findings)"
    print(f"{label}: {report.impression}")
    print(f"Model: {report.model_name} {report.model_version}")
    verdict = domain.verdict.replace("_", " ")
    if domain.score is not None:
        print(f"Input domain: {verdict} (score {domain.score:.2f}, threshold {domain.threshold:.2f})")
    else:
        print("Input domain: unchecked (this model has no input check; calibrate it with `uar calibrate`)")
    return 0
