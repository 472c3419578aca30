"""UAR inference operator: chest studies in, draft reports out.

The model is a :class:`uar.generator.ReportGenerator`. Where it comes from, first match wins:

1. a generator injected by the caller (the DICOM node's workers load it once per process);
2. a single ``.safetensors`` checkpoint found in the app's model path (``-m`` /
   ``HOLOSCAN_MODEL_PATH``: the file itself, or a folder searched recursively);
3. the embedded default model shipped in the package (``uar/default_model/uar-default.safetensors``).

Loaded generators are cached per process in a module-level dict keyed by the resolved checkpoint
path, so repeated app runs in one process load each model once.

Input-domain policy (docs/ood.md), for studies the model's input check finds out of domain:
``flag`` writes the report as usual (the SR writer marks it); ``withhold`` generates no findings
(:func:`uar.generator.withheld_report`), and with ``withhold_as="rejection"`` the study gets a
rejection record (``rejection_<StudyInstanceUID>.json``, with score and threshold) instead of an SR.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from monai.deploy.core import Fragment, Operator, OperatorSpec

from operators.study_loader import CXRStudy, Rejection, uid_tag, write_rejection
from uar.generator import Report, ReportGenerator

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".safetensors"
_DEFAULT_KEY = "<embedded default>"
_GENERATORS: dict[str, ReportGenerator] = {}
_GENERATORS_LOCK = threading.Lock()


@dataclass
class StudyReport:
    """The draft report of one study, with the model time alone (seconds, wall clock).

    ``map_instances``: headers of the attention-map Secondary Captures written for this report, by
    view ("frontal", "lateral"; filled by :class:`operators.maps_writer.MapsWriterOperator`, read by
    the SR writer to reference them).
    """

    study: CXRStudy
    report: Report
    seconds: float
    map_instances: dict[str, pydicom.Dataset] = field(default_factory=dict)


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
    generator: ReportGenerator,
    studies: Sequence[CXRStudy],
    *,
    beam_size: int,
    int8: bool = False,
    withhold: bool = False,
    maps: bool = False,
) -> list[StudyReport]:
    """Run the generator on each study: frontal image, and the lateral one when present.

    ``withhold=True``: out-of-domain studies get a withheld report (nothing generated).
    ``maps=True``: each generated report carries its sentences' grounding maps (``Report.maps``).
    """
    out: list[StudyReport] = []
    for study in studies:
        start = time.perf_counter()
        lateral = study.lateral.pixels if study.lateral is not None else None
        report = generator.generate(
            study.frontal.pixels,
            lateral,
            beam_size=beam_size,
            int8=int8,
            withhold_out_of_domain=withhold,
            maps=maps,
        )
        seconds = time.perf_counter() - start
        domain = report.domain
        log.info(
            "study %s: %s in %.3f s, input domain %s%s",
            uid_tag(study.study_instance_uid),
            "findings withheld" if report.withheld else "report generated",
            seconds,
            domain.verdict,
            f" ({domain.numbers()})" if domain.score is not None else "",
        )
        out.append(StudyReport(study, report, seconds))
    return out


def domain_rejection(study_report: StudyReport) -> Rejection:
    """The rejection record of a study whose findings were withheld (out of the input domain)."""
    study, domain = study_report.study, study_report.report.domain
    return Rejection(
        study.study_instance_uid,
        f"outside the model's validated input domain ({domain.numbers()}); no findings released",
        [str(image.path.name) for image in study.images],
        [domain.statement()],
    )


class UARInferenceOperator(Operator):
    """Input ``studies`` (``list[CXRStudy]``) -> output ``reports`` (``list[StudyReport]``).

    ``generator`` is used as is when given; otherwise the model is resolved from ``model_path``
    on the first compute (see the module docstring). ``ood_policy`` / ``withhold_as``: see the
    module docstring; withheld studies recorded as rejections are kept in :attr:`rejections`.
    ``write_maps``: also read back each sentence's grounding map (for the attention-map writer).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        model_path: Path | None = None,
        generator: ReportGenerator | None = None,
        beam_size: int = 3,
        int8_decoding: bool = False,
        ood_policy: str = "withhold",
        withhold_as: str = "sr",
        output_folder: Path | None = None,
        write_maps: bool = False,
        **kwargs: Any,
    ) -> None:
        if ood_policy not in ("withhold", "flag") or withhold_as not in ("sr", "rejection"):
            raise ValueError(f"bad input-domain policy {ood_policy!r} / withhold_as {withhold_as!r}")
        if withhold_as == "rejection" and output_folder is None:
            raise ValueError("withhold_as='rejection' needs the output folder for the records")
        self.model_path = model_path
        self.generator = generator
        self.beam_size = beam_size
        self.int8_decoding = int8_decoding
        self.ood_policy = ood_policy
        self.withhold_as = withhold_as
        self.output_folder = output_folder
        self.write_maps = write_maps
        self.reports: list[StudyReport] = []
        self.rejections: list[Rejection] = []  # withheld studies recorded as rejections
        self.verdicts: list[str] = []  # input-domain verdict of every study of the last compute
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
        reports = (
            generate_reports(
                self.generator,
                studies,
                beam_size=self.beam_size,
                int8=self.int8_decoding,
                withhold=self.ood_policy == "withhold",
                maps=self.write_maps,
            )
            if studies
            else []
        )
        self.verdicts = [r.report.domain.verdict for r in reports]
        self.rejections = []
        if self.withhold_as == "rejection":
            for r in reports:
                if r.report.withheld:
                    assert self.output_folder is not None
                    rejection = domain_rejection(r)
                    write_rejection(rejection, self.output_folder)
                    self.rejections.append(rejection)
            reports = [r for r in reports if not r.report.withheld]
        self.reports = reports
        op_output.emit(self.reports, "reports")
