"""``uar label``: label report text with the offline rule-based CheXpert-style labeler.

Examples::

    uar label "Heart size is mildly enlarged. No pleural effusion or pneumothorax."
    uar label --file report.txt
    echo "Cannot exclude early infiltrate." | uar label -

Prints one JSON object with exactly the 14 CheXpert observations as keys
(1 positive, 0 negative, -1 uncertain, null not mentioned); see docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uar.eval.labeler import label_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``label`` sub-command."""
    p = subparsers.add_parser(
        "label",
        help="label report text (14 CheXpert observations, rule-based, offline)",
        description="Print the 14-observation labels of a report as JSON (rule-based, not CheXbert).",
    )
    p.add_argument("text", nargs="?", help="report text, or '-' to read standard input")
    p.add_argument("--file", type=Path, help="read the report from this UTF-8 text file")
    p.add_argument("--indent", type=int, default=None, help="JSON indentation (default: one line)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Label the given text and print the JSON object; returns the exit code."""
    if args.file is not None:
        text = args.file.read_text(encoding="utf-8")
    elif args.text == "-":
        text = sys.stdin.read()
    elif args.text is not None:
        text = args.text
    else:
        raise ValueError("give the report TEXT, '-' for standard input, or --file PATH")
    print(json.dumps(label_report(text), indent=args.indent))
    return 0
