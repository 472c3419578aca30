"""What int8 decoding changes in the reports of a model: fp32 and int8 side by side on the same studies.

For the first ``--n`` studies of a split (one study at a time, as the app and the node generate) it
prints how many reports are identical, how many have the same positive findings (the rule-based
labeler on the generated text), and the CE micro-F1 of both against the studies' ground-truth
``labels`` when the set has them (synthetic sets do).

Usage: ``python benchmarks/int8_agreement.py runs/default/test [--split test] [--n 200]
[--checkpoint C]`` (default checkpoint: the embedded model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from uar.data.images import load_image
from uar.eval.ce import ce_scores
from uar.generator import Report, ReportGenerator


def positives(report: Report) -> set[str]:
    """Observations the labeler reads as positive in a generated report."""
    return {k for k, v in report.labels.items() if v == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="R2Gen-layout folder (annotation.json + images/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=200, help="studies (default 200)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model (default: embedded)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = ReportGenerator.load(args.checkpoint)
    studies = json.loads((args.data / "annotation.json").read_text(encoding="utf-8"))[args.split][: args.n]
    out: dict[bool, list[Report]] = {False: [], True: []}
    for study in studies:
        views = [load_image(args.data / "images" / p) for p in study["image_path"]]
        lateral = views[1] if len(views) > 1 else None
        for int8 in (False, True):
            out[int8].append(generator.generate(views[0], lateral, int8=int8))
    n = len(studies)
    same_text = sum(a.findings == b.findings for a, b in zip(out[False], out[True], strict=True))
    same_pos = sum(positives(a) == positives(b) for a, b in zip(out[False], out[True], strict=True))
    print(f"{generator.name} {generator.version}, {n} studies of {args.data} ({args.split})")
    print(f"identical reports: {same_text}/{n}; identical positive findings: {same_pos}/{n}")
    if all(s.get("labels") for s in studies):
        truth = [s["labels"] for s in studies]
        for int8 in (False, True):
            f1 = ce_scores([r.labels for r in out[int8]], truth).micro.f1
            print(f"{'int8' if int8 else 'fp32'}: CE micro-F1 against the ground truth {f1:.4f}")


if __name__ == "__main__":
    main()
