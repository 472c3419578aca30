"""``uar evaluate``: NLG, CE and retrieval metrics of checkpoints on an R2Gen-format split.

Examples::

    uar evaluate --checkpoint runs/uar-iu/best.safetensors --data data/iu_xray --out results/uar-iu.json
    uar evaluate --checkpoint best.safetensors --data data/iu_xray --r2gen-references --out r2gen-refs.json
    uar evaluate --checkpoint uar.safetensors --compare base.safetensors no-tir.safetensors \\
        --data data/iu_xray --out ablation.json

Without ``--checkpoint`` the embedded default model is evaluated, as ``uar generate`` uses it.
Writes RESULT.json (keys in docs/evaluation.md; with ``--compare`` the other checkpoints' results are
under ``"compare"``) and prints a Markdown table beside the paper's reference rows, the per-observation
CE table and sanity figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="BLEU/METEOR/ROUGE-L/CIDEr, CE and retrieval of checkpoints on a dataset split",
        description="Evaluate checkpoints on an R2Gen-format dataset split (see docs/evaluation.md).",
    )
    p.add_argument("--checkpoint", type=Path, help="checkpoint to evaluate (default: embedded model)")
    p.add_argument("--data", required=True, type=Path, help="dataset root (annotation.json + images)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", required=True, type=Path, help="result JSON file to write")
    p.add_argument("--beam", type=int, default=3, help="beam size (1 = greedy; default 3)")
    p.add_argument(
        "--r2gen-references",
        action="store_true",
        help="score against references rebuilt through the truncated vocabulary, as R2Gen did",
    )
    p.add_argument(
        "--both-references",
        action="store_true",
        help="also score against the other kind of references (second set of NLG keys in the JSON)",
    )
    p.add_argument("--compare", nargs="+", type=Path, default=[], metavar="C", help="more checkpoints")
    p.add_argument("--max-studies", type=int, help="evaluate only the first N studies")
    p.add_argument("--batch-size", type=int, default=16, help="studies per generation batch (16)")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java)")
    p.add_argument("--device", default="cpu", help="torch device for generation (cpu, cuda, cuda:1, ...)")
    p.set_defaults(func=run)


def _label(result: dict[str, Any]) -> str:
    return f"{result['model_name']} ({Path(result['checkpoint']).name})"


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the JSON, print the tables; returns the exit code."""
    from uar.eval.ce import CEResult, ce_table
    from uar.eval.evaluate import (
        PAPER_ABLATION_ROWS,
        PAPER_ROWS,
        evaluate_checkpoint,
        markdown_table,
        sanity_text,
    )

    results = [
        evaluate_checkpoint(
            path,
            args.data,
            split=args.split,
            beam_size=args.beam,
            r2gen_references=args.r2gen_references,
            max_studies=args.max_studies,
            batch_size=args.batch_size,
            meteor=not args.no_meteor,
            device=args.device,
            both_references=args.both_references,
        )
        for path in [args.checkpoint, *args.compare]
    ]
    main = dict(results[0])
    if args.compare:
        main["compare"] = results[1:]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(main, indent=2) + "\n", encoding="utf-8")

    dataset = results[0]["dataset"]
    reference = dict(PAPER_ROWS.get(dataset, {}))
    if args.compare and dataset == "iu_xray":
        reference = {**PAPER_ABLATION_ROWS, **reference}
    refs_note = "R2Gen vocabulary round-trip references" if args.r2gen_references else "cleaned references"
    print(f"\n## {args.split} split, n = {results[0]['n']}, beam {args.beam}, {refs_note}\n")
    runs = [(_label(r), r) for r in results]
    for r in results:
        for key, kind in (("nlg_r2gen_references", "R2Gen refs"), ("nlg_cleaned_references", "cleaned refs")):
            if key in r:
                runs.append((f"{_label(r)}, {kind}", {**r, **r[key]}))
    print(markdown_table(runs, reference))
    for r in results:
        ce = CEResult.from_dict(r)
        print(f"\n### {_label(r)}: CE against labeled reference reports (rule-based labeler)\n")
        print(ce_table(ce))
        if "ce_gt_micro_f1" in r:
            print(f"\n### {_label(r)}: CE against the dataset's ground-truth labels\n")
            print(ce_table(CEResult.from_dict(r, "ce_gt")))
        rt = r["retrieval"]
        print(
            f"\nretrieval: R@1 {rt['recall_at_1']:.3f}  R@5 {rt['recall_at_5']:.3f}"
            f"  R@10 {rt['recall_at_10']:.3f}"
            f"  median rank {rt['median_rank']:.1f} of {rt['n']}"
        )
        print(sanity_text(r))
    print(f"\nwrote {args.out}")
    return 0
