"""UAR inference operator: chest studies in, draft reports out.

The model is a :class:`uar.generator.ReportGenerator`. Where it comes from, first match wins:

1. a generator injected by the caller (the DICOM node's workers load it once per process);
2. a single ``.safetensors`` checkpoint found in the app's model path (``-m`` /
   ``HOLOSCAN_MODEL_PATH``: the file itself, or a folder searched recursively);
3. the embedded default model shipped in the package (``uar/default_model/uar-default.safetensors``).

Loaded generators are cached per process in a module-level dict keyed by the resolved checkpoint
path, so repeated app runs in one process load each model once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.study_loader import CXRStudy, uid_tag
from uar.generator import Report, ReportGenerator

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".safetensors"
_DEFAULT_KEY = "<embedded default>"
_GENERATORS: dict[str, ReportGenerator] = {}
_GENERATORS_LOCK = threading.Lock()


@dataclass
class StudyReport:
    """The draft report of one study, with the model time alone (seconds, wall clock)."""

    study: CXRStudy
    report: Report
    seconds: float


def find_checkpoint(model_path: str | Path | None) -> Path | None:
    """The ``.safetensors`` checkpoint under ``model_path``, or ``None`` to use the embedded default.

    ``model_path`` may be the checkpoint file or a folder (searched recursively). A folder holding
    several checkpoints is ambiguous and raises ``ValueError``; a missing path or a folder without
    a checkpoint gives ``None``.
    """
    if model_path is None:
        return None
    path = Path(model_path)
    if path.is_file():
        if path.suffix != CHECKPOINT_SUFFIX:
            raise ValueError(f"model file {path} is not a {CHECKPOINT_SUFFIX} checkpoint")
        return path.resolve()
    if not path.is_dir():
        return None
    found = sorted(path.rglob(f"*{CHECKPOINT_SUFFIX}"))
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(path)) for p in found)
        raise ValueError(f"several checkpoints under {path} ({names}); point the model path at one file")
    return found[0].resolve() if found else None


def load_generator(model_path: str | Path | None = None) -> ReportGenerator:
    """The process-wide cached generator for ``model_path`` (see :func:`find_checkpoint`)."""
    checkpoint = find_checkpoint(model_path)
    key = str(checkpoint) if checkpoint is not None else _DEFAULT_KEY
    with _GENERATORS_LOCK:
        generator = _GENERATORS.get(key)
        if generator is None:
            start = time.perf_counter()
            generator = ReportGenerator.load(checkpoint)
            log.info(
                "loaded model %s %s from %s in %.2f s",
                generator.name,
                generator.version,
                key,
                time.perf_counter() - start,
            )
            _GENERATORS[key] = generator
    return generator


def generate_reports(
    generator: ReportGenerator, studies: Sequence[CXRStudy], *, beam_size: int, int8: bool = False
) -> list[StudyReport]:
    """Run the generator on each study: frontal image, and the lateral one when present."""
    out: list[StudyReport] = []
    for study in studies:
        start = time.perf_counter()
        lateral = study.lateral.pixels if study.lateral is not None else None
        report = generator.generate(study.frontal.pixels, lateral, beam_size=beam_size, int8=int8)
        seconds = time.perf_counter() - start
        log.info("study %s: report generated in %.3f s", uid_tag(study.study_instance_uid), seconds)
        out.append(StudyReport(study, report, seconds))
    return out


class UARInferenceOperator(Operator):
    """Input ``studies`` (``list[CXRStudy]``) -> output ``reports`` (``list[StudyReport]``).

    ``generator`` is used as is when given; otherwise the model is resolved from ``model_path``
    on the first compute (see the module docstring).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        model_path: Path | None = None,
        generator: ReportGenerator | None = None,
        beam_size: int = 3,
        int8_decoding: bool = False,
        **kwargs: Any,
    ) -> None:
        self.model_path = model_path
        self.generator = generator
        self.beam_size = beam_size
        self.int8_decoding = int8_decoding
        self.reports: list[StudyReport] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input("studies")
        spec.output("reports")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Generate one report per received study and emit them."""
        studies: list[CXRStudy] = op_input.receive("studies")
        if studies and self.generator is None:
            self.generator = load_generator(self.model_path)
        self.reports = (
            generate_reports(self.generator, studies, beam_size=self.beam_size, int8=self.int8_decoding)
            if studies
            else []
        )
        op_output.emit(self.reports, "reports")
