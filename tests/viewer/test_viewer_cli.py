"""``uar viewer`` is registered like ``uar node`` and parses its options."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from plugin.viewer.cli import cmd_viewer, register
from tests.conftest import REPO


def test_entry_point_and_options() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["uar.commands"]["viewer"] == "plugin.viewer.cli:register"
    parser = argparse.ArgumentParser(prog="uar")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["viewer", "--screenshot", "x.png", "--no-pdf", "--port", "8080"])
    assert args.func is cmd_viewer and args.screenshot == Path("x.png") and args.no_pdf and args.port == 8080
    args = parser.parse_args(["viewer", "--study", "a.dcm", "b.dcm", "--export", "dicomweb"])
    assert args.study == [Path("a.dcm"), Path("b.dcm")] and args.screenshot is None
    assert args.export == "dicomweb"
