"""Run the UAR report application in-process, once per study folder (the DICOM node's entry point).

Holoscan runs several applications one after the other in one process, and from several threads
at once (checked: sequential runs, runs after a failed run, and 4 threads x 20 runs each); each
run builds a fresh graph, which costs milliseconds. The model is not part of that cost: pass an
already loaded ``generator``, or rely on the process-wide cache of :func:`operators.inference.load_generator`.

In-process runs do not let the SDK reconfigure logging (its ``init_app_context`` would replace the
root logger's handlers of the host program on every run), and Holoscan's own C++ log level is set
to WARN unless ``HOLOSCAN_LOG_LEVEL`` says otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from holoscan.logger import LogLevel, set_log_level

from operators.inference import StudyReport
from operators.study_loader import Rejection
from plugin.app import UARReportApp
from plugin.settings import AppSettings
from uar.generator import ReportGenerator

# argv[0] is dropped by Holoscan and argv[1] by the SDK's parse_args (platform.md §0.4).
_ARGV_PREFIX = ["uar-report-app", "uar-report-app"]


@dataclass
class AppResult:
    """What one app run wrote: SR, PDF and attention-map (Secondary Capture) files, rejection
    records, and the reports themselves.

    ``rejections`` holds the loader's rejections, then the studies withheld as rejection records
    (input-domain policy); ``verdicts`` the input-domain verdict of every study the model read.
    """

    srs: list[Path] = field(default_factory=list)
    pdfs: list[Path] = field(default_factory=list)
    maps: list[Path] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    reports: list[StudyReport] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)


def run_app(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    generator: ReportGenerator | None = None,
    model_path: str | Path | None = None,
    settings: AppSettings | None = None,
) -> AppResult:
    """Run the app on ``input_dir`` (DICOM files of one or more studies), writing into ``output_dir``.

    ``generator`` wins over ``model_path``; with neither, the model comes from
    ``HOLOSCAN_MODEL_PATH`` when it holds a checkpoint, else the embedded default. ``settings``
    default to the ``uar:`` section of app.yaml. Exceptions from any operator are re-raised.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder not found: {input_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    argv = [*_ARGV_PREFIX, "-i", str(input_dir), "-o", str(output_dir)]
    if model_path is not None:
        if not Path(model_path).exists():
            raise FileNotFoundError(f"model path not found: {model_path}")
        argv += ["-m", str(model_path)]
    if "HOLOSCAN_LOG_LEVEL" not in os.environ:
        set_log_level(LogLevel.WARN)  # Holoscan's per-run [info] lines would flood a long-running node
    app = UARReportApp(argv, generator=generator, settings=settings, configure_logging=False)
    app.run()
    assert app.loader is not None and app.inference is not None and app.sr_writer is not None
    return AppResult(
        srs=[w.path for w in app.sr_writer.written],
        pdfs=[w.path for w in app.pdf_writer.written] if app.pdf_writer is not None else [],
        maps=[w.path for w in app.maps_writer.written] if app.maps_writer is not None else [],
        rejections=[*app.loader.rejections, *app.inference.rejections, *app.sr_writer.rejections],
        reports=list(app.inference.reports),
        verdicts=list(app.inference.verdicts),
    )
