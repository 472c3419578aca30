"""The ``uar`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds an ``argparse`` sub-parser whose ``func`` default
takes the parsed ``argparse.Namespace`` and returns an exit code. Other installed packages add
sub-commands through the ``uar.commands`` entry-point group (the DICOM node adds ``uar node``);
they are imported only when present, so this package never imports networking code itself.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from uar import __version__
from uar.heap import fix_mmap_threshold

# Sub-command modules of this package, in the order ``uar --help`` lists them.
_BUILTIN = ("generate", "label", "evaluate", "train", "tokenizer", "data", "export", "calibrate")


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``uar`` argument parser with every built-in and plug-in sub-command."""
    parser = argparse.ArgumentParser(prog="uar", description="UAR chest X-ray report generation")
    parser.add_argument("--version", action="version", version=f"uar {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _BUILTIN:
        importlib.import_module(f"uar.cli.{name}").register(sub)
    for ep in entry_points(group="uar.commands"):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uar`` console script; returns the process exit code."""
    fix_mmap_threshold()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"uar {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
