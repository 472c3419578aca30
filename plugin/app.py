"""The UAR report application: CXR study folder in, TID 2000 Enhanced SR (and optional PDF and
attention-map Secondary Captures) out.

Graph (one tick: the loader has ``CountCondition(1)``, so one run handles one input folder)::

    CXRStudyLoaderOperator --studies--> UARInferenceOperator --reports--> SRWriterOperator
                                                             \\--reports--> PDFWriterOperator (write_pdf)

With ``write_maps`` the attention-map writer sits before the SR writer (the SR references its
pictures)::

    UARInferenceOperator --reports--> MapsWriterOperator --reports--> SRWriterOperator

Paths come from ``-i/-o/-m`` or ``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` /
``HOLOSCAN_MODEL_PATH`` (SDK ``AppContext``). Settings come from the ``uar:`` key of the YAML file
named by ``HOLOSCAN_CONFIG_PATH`` (``/var/holoscan/app.yaml`` in a MAP), else the repository's
``app.yaml``, read with the SDK's ``self.config(path)`` / ``self.kwargs("uar")``; an
:class:`AppSettings` passed to the constructor replaces them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.core.arg_parser import parse_args

from operators.inference import UARInferenceOperator
from operators.maps_writer import MapsWriterOperator
from operators.pdf_writer import PDFWriterOperator
from operators.sr_writer import SRWriterOperator
from operators.study_loader import CXRStudyLoaderOperator
from plugin.settings import REPO_APP_YAML, SETTINGS_KEY, AppSettings
from uar.generator import ReportGenerator


def config_path() -> Path:
    """The app.yaml to read: ``HOLOSCAN_CONFIG_PATH`` when set, else the repository's ``app.yaml``."""
    return Path(os.environ.get("HOLOSCAN_CONFIG_PATH") or REPO_APP_YAML)


class UARReportApp(Application):
    """Draft chest X-ray reports as DICOM SR, with the UAR model.

    Args:
        generator: an already loaded model to use instead of loading one from the model path.
        settings: settings to use instead of the ``uar:`` section of app.yaml.
        configure_logging: let the SDK reconfigure the root logger (its ``init_app_context`` does);
            ``False`` for in-process runs inside another program (the DICOM node).
    """

    def __init__(
        self,
        *args: Any,
        generator: ReportGenerator | None = None,
        settings: AppSettings | None = None,
        configure_logging: bool = True,
        **kwargs: Any,
    ) -> None:
        self.generator = generator
        self.settings = settings
        self.configure_logging = configure_logging
        self.loader: CXRStudyLoaderOperator | None = None
        self.inference: UARInferenceOperator | None = None
        self.sr_writer: SRWriterOperator | None = None
        self.pdf_writer: PDFWriterOperator | None = None
        self.maps_writer: MapsWriterOperator | None = None
        super().__init__(*args, **kwargs)

    def app_context(self) -> AppContext:
        """Paths from ``self.argv`` and the HOLOSCAN_* variables (SDK rules: arguments win)."""
        if self.configure_logging:
            # Called on the class: on the instance it would receive the app object as argv.
            return Application.init_app_context(self.argv)
        args = parse_args(self.argv)
        return AppContext({key: value for key, value in vars(args).items() if value})

    def load_settings(self) -> AppSettings:
        """The ``uar:`` section of the app.yaml (:func:`config_path`), via the SDK config mechanism."""
        path = config_path()
        if not path.is_file():
            raise FileNotFoundError(f"app config not found: {path} (set HOLOSCAN_CONFIG_PATH)")
        self.config(str(path))
        return AppSettings.from_dict(
            self.kwargs(SETTINGS_KEY) if SETTINGS_KEY in self.config_keys() else None
        )

    def compose(self) -> None:
        """Create the operators and connect them."""
        context = self.app_context()
        if self.settings is None:
            self.settings = self.load_settings()
        output_folder = Path(context.output_path)
        output_folder.mkdir(parents=True, exist_ok=True)
        self.loader = CXRStudyLoaderOperator(
            self,
            CountCondition(self, 1),
            input_folder=Path(context.input_path),
            output_folder=output_folder,
            name="study_loader",
        )
        self.inference = UARInferenceOperator(
            self,
            model_path=Path(context.model_path) if context.model_path else None,
            generator=self.generator,
            beam_size=self.settings.beam_size,
            int8_decoding=self.settings.int8_decoding,
            ood_policy=self.settings.ood_policy,
            withhold_as=self.settings.ood_withhold_as,
            output_folder=output_folder,
            write_maps=self.settings.write_maps,
            name="uar_inference",
        )
        self.sr_writer = SRWriterOperator(
            self, output_folder=output_folder, settings=self.settings, name="sr_writer"
        )
        self.add_flow(self.loader, self.inference, {("studies", "studies")})
        if self.settings.write_maps:
            self.maps_writer = MapsWriterOperator(
                self, output_folder=output_folder, settings=self.settings, name="maps_writer"
            )
            self.add_flow(self.inference, self.maps_writer, {("reports", "reports")})
            self.add_flow(self.maps_writer, self.sr_writer, {("reports", "reports")})
        else:
            self.add_flow(self.inference, self.sr_writer, {("reports", "reports")})
        if self.settings.write_pdf:
            self.pdf_writer = PDFWriterOperator(
                self, output_folder=output_folder, settings=self.settings, name="pdf_writer"
            )
            self.add_flow(self.inference, self.pdf_writer, {("reports", "reports")})
