"""``uar generate``: write the draft report of one study from a frontal (and lateral) image.

Examples::

    uar generate frontal.png lateral.png
    uar generate study/IM0001.dcm --checkpoint runs/iu/best.safetensors --beam 3 --json

Images are PNG, JPEG or DICOM files (recognised by content). Without ``--checkpoint`` the embedded
default model is used. The impression is derived from the generated findings by the rule-based
labeler, not generated. The input-domain verdict (docs/ood.md) is printed with the report:
``in_domain`` / ``out_of_domain`` with score and threshold, or ``unchecked`` for a model without
calibration data; ``--withhold`` prints no findings for an out-of-domain study (as the node's
default policy does). ``--maps OUT.png`` also writes, per view given, a picture of where the model
looked while writing each sentence (``OUT-frontal.png``, ``OUT-lateral.png``; docs/grounding.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from uar.data.images import load_image
from uar.generator import Report, ReportGenerator
from uar.grounding_overlay import render_overlay

VIEWS = ("frontal", "lateral")


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
    p.add_argument(
        "--maps",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="write each view with the sentences' grounding maps to OUT-frontal.png (and OUT-lateral.png)",
    )
    p.set_defaults(func=run)


def map_paths(out: Path, n_views: int) -> list[Path]:
    """Where ``--maps OUT.png`` writes the pictures of ``n_views`` views: OUT-frontal.png, OUT-lateral.png."""
    suffix = out.suffix or ".png"
    return [out.with_name(f"{out.stem}-{VIEWS[v]}{suffix}") for v in range(n_views)]


def write_maps(report: Report, images: list[np.ndarray], out: Path) -> list[Path]:
    """Write the grounding pictures of ``report`` for the given view images; returns the paths."""
    paths = map_paths(out, len(images))
    for v, (image, path) in enumerate(zip(images, paths, strict=True)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_overlay(image, report.maps, v, view_name=VIEWS[v])).save(path)
    return paths


def report_json(report: Report) -> str:
    """The report as one JSON object; each map as its sentence, word span, per-view share and peak."""
    d = dataclasses.asdict(dataclasses.replace(report, maps=[]))
    d["maps"] = [m.to_dict() for m in report.maps]
    return json.dumps(d)


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
        frontal,
        lateral,
        beam_size=args.beam,
        int8=args.int8,
        withhold_out_of_domain=args.withhold,
        maps=args.maps is not None,
    )
    written: list[Path] = []
    if args.maps is not None and report.maps:
        images = [frontal] if lateral is None or generator.config.n_views == 1 else [frontal, lateral]
        written = write_maps(report, images, args.maps)
    if args.json:
        print(report_json(report))
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
    if args.maps is not None:
        if written:
            print("Grounding maps: " + ", ".join(str(p) for p in written))
        else:
            print("Grounding maps: none (no findings were generated)")
    return 0
