"""``uar viewer``: Orthanc + the node + OHIF on loopback, a study routed through the node, the URL printed.

Registered through the ``uar.commands`` entry point (``viewer = plugin.viewer.cli:register``);
``python -m plugin.viewer`` and ``make viewer`` run the same command. See docs/viewer.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

DEMO_SEED = 2  # synthetic case: a DX two-view study (MONOCHROME2)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``uar viewer`` to the ``uar`` parser."""
    add_arguments(
        subparsers.add_parser(
            "viewer", help="OHIF + Orthanc + the node on loopback: see the draft report beside the images"
        )
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``uar viewer``."""
    parser.add_argument("--study", nargs="+", type=Path, metavar="DICOM", help="files of one study to route")
    parser.add_argument("--model", help="checkpoint (.safetensors); default: the embedded model")
    parser.add_argument("--no-pdf", action="store_true", help="SR only (no Encapsulated PDF)")
    parser.add_argument(
        "--maps",
        action="store_true",
        help="also the attention-map Secondary Captures (app setting write_maps)",
    )
    parser.add_argument(
        "--export",
        choices=("dimse", "dicomweb"),
        default="dimse",
        help="how the node sends back (C-STORE or STOW-RS)",
    )
    parser.add_argument("--bind", default="127.0.0.1", help="address of the viewer's web server")
    parser.add_argument("--port", type=int, default=0, help="port of the viewer (default: a free one)")
    parser.add_argument(
        "--screenshot", type=Path, metavar="PNG", help="write a screenshot of the study and exit"
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="scratch folder to keep (default: temporary)"
    )
    parser.set_defaults(func=cmd_viewer)


def _demo_study(folder: Path) -> list[Path]:
    import numpy as np
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    from uar.synthetic.dicom import write_study
    from uar.synthetic.sampling import sample_case

    case = sample_case(np.random.default_rng(DEMO_SEED))
    study = write_study(folder, case, DEMO_SEED, transfer_syntax=ExplicitVRLittleEndian)
    for path in (study.frontal, study.lateral):
        # OHIF 3.13.2 fails to load an image that carries VOI LUT Function (0028,1056) LINEAR
        # (IMAGE_LOAD_ERROR; LINEAR is also the default when absent), see docs/viewer.md.
        ds = pydicom.dcmread(path)
        if "VOILUTFunction" in ds:
            del ds.VOILUTFunction
            ds.save_as(path, enforce_file_format=True)
    return [study.frontal, study.lateral]


def cmd_viewer(args: argparse.Namespace) -> int:
    """Run the stack; with ``--screenshot`` check the view, write the PNG and exit (1 if a check fails)."""
    from plugin.node.log import setup_logging
    from plugin.viewer.assets import ViewerSetupError
    from plugin.viewer.browser import check_view, inspect_study
    from plugin.viewer.stack import ViewerStack

    setup_logging("kv")
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM during start-up also stops what was started
    with tempfile.TemporaryDirectory(prefix="uar-viewer-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        stack = ViewerStack(
            root,
            model_path=args.model,
            write_pdf=not args.no_pdf,
            write_maps=args.maps,
            bind=args.bind,
            port=args.port,
            export=args.export,
        )
        try:
            stack.start()
            files = args.study or _demo_study(root / "demo-study")
            print(f"viewer: routing {len(files)} instances Orthanc -> node -> Orthanc ...", flush=True)
            t0 = time.monotonic()
            routed = stack.route(files)
            print(
                f"viewer: the draft report is back in the study after {time.monotonic() - t0:.1f} s",
                flush=True,
            )
            if args.screenshot is not None:
                modalities = _modalities(routed.pdf_instance is not None, files, bool(routed.map_instances))
                result = inspect_study(
                    stack.url,
                    routed.study_uid,
                    args.screenshot,
                    modalities=modalities,
                    texts=routed.report_texts(),
                )
                problems = check_view(result, pdf_words_from=routed.report_plain())
                print(f"viewer: screenshot written to {args.screenshot}")
                for p in problems:
                    print(f"viewer: check failed: {p}", file=sys.stderr)
                return 1 if problems else 0
            print(f"\nOpen {stack.study_url(routed.study_uid)}\n(Orthanc: {stack.orthanc.url}; Ctrl-C stops)")
            _wait_for_signal()
            return 0
        except (ViewerSetupError, RuntimeError, TimeoutError) as exc:
            print(f"uar viewer: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("uar viewer: interrupted, stopping", file=sys.stderr)
            return 130
        finally:
            stack.stop()


def _modalities(with_pdf: bool, files: Sequence[Path], with_maps: bool = False) -> list[str]:
    """The layout of the screenshot: image | attention maps (OT, when back) | SR | PDF (when back)."""
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["Modality"])
    image = str(first.get("Modality", "CR"))
    return [image, *(["OT"] if with_maps else []), "SR", *(["DOC"] if with_pdf else [])]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _wait_for_signal() -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop.wait(0.5):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m plugin.viewer``: ``uar viewer`` without the ``uar`` dispatcher."""
    parser = argparse.ArgumentParser(prog="python -m plugin.viewer", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
