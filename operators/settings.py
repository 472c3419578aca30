"""Typed settings the report operators read: decoding, SR, PDF and attention-map series, equipment,
language.

:class:`AppSettings` is defined here, with the operators that read it (``UARInferenceOperator`` gets
``beam_size``, ``int8_decoding`` and ``write_maps``, ``SRWriterOperator``, ``PDFWriterOperator`` and
``MapsWriterOperator`` the series, equipment and title fields); the application
(:mod:`plugin.settings`, :mod:`plugin.app`) reads it from the ``uar:`` key of ``app.yaml``
(:meth:`AppSettings.from_yaml`) and passes it in; nothing here imports the application.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

SETTINGS_KEY = "uar"  # the top-level key of these settings in app.yaml
OOD_POLICIES = ("withhold", "flag")
WITHHOLD_OUTPUTS = ("sr", "rejection")


@dataclass(frozen=True)
class AppSettings:
    """What the application writes and how it generates.

    Series numbers are stable (the same for every study) so that PACS users can hang
    the AI draft series in a fixed place of a hanging protocol.
    """

    beam_size: int = 3  # beam width of the report decoder
    int8_decoding: bool = False  # decode with int8 weight copies: faster, wording may differ
    sr_series_number: int = 9901  # SeriesNumber (0020,0011) of the SR series
    sr_series_description: str = "AI draft report (UAR) - PRELIMINARY, NOT VERIFIED"
    write_pdf: bool = False  # also write an Encapsulated PDF of the same report
    pdf_series_number: int = 9902
    pdf_series_description: str = "AI draft report (UAR) PDF - PRELIMINARY, NOT VERIFIED"
    # also write one Secondary Capture per view: where the model looked for each sentence (not diagnostic)
    write_maps: bool = False
    maps_series_number: int = 9903
    maps_series_description: str = "AI attention map (UAR) - NOT FOR DIAGNOSIS"
    manufacturer: str = "UAR Report Node"  # Manufacturer (0008,0070) of the SR / PDF equipment
    institution_name: str = ""  # InstitutionName (0008,0080); empty = not written
    language: str = "en-US"  # RFC 5646 tag of the report text (TID 1204)
    report_title: str = "X-Ray Report"  # document title, LOINC 43468-8 (CID 7000)
    # Studies outside the model's validated input domain (docs/ood.md):
    # "withhold" = no generated findings are released; "flag" = the report is written and marked.
    ood_policy: str = "withhold"
    ood_withhold_as: str = "sr"  # withheld studies get an SR saying so ("sr") or a rejection record
    ood_sr_series_description: str = "AI draft (UAR) - OUTSIDE VALIDATED INPUT DOMAIN"
    withheld_sr_series_description: str = "AI draft (UAR) - NOT REPORTED: OUTSIDE INPUT DOMAIN"

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping, the same keys as the ``uar:`` section of ``app.yaml``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AppSettings:
        """Build from the ``uar:`` mapping; unknown keys raise ``ValueError`` (typos must not pass)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown keys in the '{SETTINGS_KEY}' settings: {sorted(unknown)}")
        settings = cls(**d)
        if settings.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {settings.beam_size}")
        for name in ("sr_series_number", "pdf_series_number", "maps_series_number"):
            if not 0 < getattr(settings, name) < 2**31:
                raise ValueError(f"{name} must be a positive IS value, got {getattr(settings, name)}")
        if settings.ood_policy not in OOD_POLICIES:
            raise ValueError(f"ood_policy must be one of {OOD_POLICIES}, got {settings.ood_policy!r}")
        if settings.ood_withhold_as not in WITHHOLD_OUTPUTS:
            raise ValueError(
                f"ood_withhold_as must be one of {WITHHOLD_OUTPUTS}, got {settings.ood_withhold_as!r}"
            )
        for name in (
            "sr_series_description",
            "pdf_series_description",
            "maps_series_description",
            "ood_sr_series_description",
            "withheld_sr_series_description",
        ):
            if len(getattr(settings, name)) > 64:
                raise ValueError(f"{name} must fit SeriesDescription (LO, at most 64 characters)")
        return settings

    @classmethod
    def from_yaml(cls, path: str | Path) -> AppSettings:
        """Read the ``uar:`` section of an ``app.yaml`` file (missing section = defaults)."""
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        return cls.from_dict(doc.get(SETTINGS_KEY))
