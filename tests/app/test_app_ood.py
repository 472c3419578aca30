"""The input-domain policy through the app: what the SR (or the rejection record) says per verdict.

A tiny model gets an input check whose threshold puts every study out of domain (-1) or within it
(1e9); the real chest file goes through the whole app (loader, inference, SR writer, PDF writer)
and each SR must pass dciodvfy.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest
import torch

from operators.sr_writer import section_text
from plugin.runner import AppResult, run_app
from plugin.settings import AppSettings
from tests.app.conftest import SMALL_CHEST_FILE, link_inputs
from tests.conftest import require_tool
from uar.checkpoint import load_checkpoint, write_input_check
from uar.generator import ReportGenerator
from uar.ood import InputCheck

BASE = {"beam_size": 1, "write_pdf": True}  # the PDF shares the SR's Summary text


def _with_threshold(src: Path, out: Path, threshold: float) -> ReportGenerator:
    cfg = load_checkpoint(src).cfg
    check = InputCheck(
        mean=torch.zeros(cfg.n_views, cfg.d_model),
        precision=torch.eye(cfg.d_model).repeat(cfg.n_views, 1, 1),
        threshold=threshold,
        n_reference=2,
        n_calibration=1,
    )
    return ReportGenerator.load(write_input_check(src, check, out))


@pytest.fixture(scope="module")
def generators(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ReportGenerator]:
    root = tmp_path_factory.mktemp("ood-models")
    return {
        "out": _with_threshold(tiny_checkpoint, root / "out.safetensors", -1.0),
        "in": _with_threshold(tiny_checkpoint, root / "in.safetensors", 1e9),
        "unchecked": ReportGenerator.load(tiny_checkpoint),
    }


def _run(dicom_dir: Path, tmp: Path, generator: ReportGenerator, **settings: object) -> AppResult:
    inputs = link_inputs(tmp / "in", [dicom_dir / SMALL_CHEST_FILE])
    return run_app(
        inputs, tmp / "out", generator=generator, settings=AppSettings.from_dict({**BASE, **settings})
    )


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, errors="replace"
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def _items(sr: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    """Root content items by concept name meaning (the sections' TEXT items under '<section>/')."""
    out = {}
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        out[name] = item
        for child in item.get("ContentSequence", []):
            out[f"{name}/{child.ConceptNameCodeSequence[0].CodeMeaning}"] = child
    return out


def _check(sr_path: Path) -> tuple[pydicom.Dataset, dict[str, pydicom.Dataset]]:
    assert _dciodvfy_errors(sr_path) == []
    sr = pydicom.dcmread(sr_path)
    return sr, _items(sr)


def test_flag_writes_the_report_with_a_prominent_statement_and_coded_item(
    dicom_dir: Path, tmp_path: Path, generators: dict[str, ReportGenerator]
) -> None:
    result = _run(dicom_dir, tmp_path, generators["out"], ood_policy="flag")
    assert result.verdicts == ["out_of_domain"] and result.rejections == []
    sr, items = _check(result.srs[0])
    assert sr.SeriesDescription == "AI draft (UAR) - OUTSIDE VALIDATED INPUT DOMAIN"
    first = sr.ContentSequence[[i.RelationshipType for i in sr.ContentSequence].index("CONTAINS")]
    assert first.ValueType == "TEXT" and first.TextValue.startswith("WARNING: OUTSIDE THE MODEL'S VALIDATED")
    assert "threshold -1.0" in first.TextValue
    assert items["Input domain check"].ConceptCodeSequence[0].CodeValue == "IDC-OUT"
    assert float(items["Input domain threshold"].MeasuredValueSequence[0].NumericValue) == -1.0
    assert float(items["Input domain score"].MeasuredValueSequence[0].NumericValue) > 0
    assert items["Summary/Summary"].TextValue.startswith(
        "WARNING: OUTSIDE THE MODEL'S VALIDATED INPUT DOMAIN"
    )
    report = result.reports[0].report
    assert section_text(items["Findings"]) == report.findings and report.token_ids  # the findings are there
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence].count("99UARRN") == 1
    assert len(result.pdfs) == 1


def test_withhold_releases_no_findings_and_says_why(
    dicom_dir: Path, tmp_path: Path, generators: dict[str, ReportGenerator]
) -> None:
    result = _run(dicom_dir, tmp_path, generators["out"], ood_policy="withhold")
    sr, items = _check(result.srs[0])
    assert sr.SeriesDescription == "AI draft (UAR) - NOT REPORTED: OUTSIDE INPUT DOMAIN"
    report = result.reports[0].report
    assert report.withheld and report.token_ids == []
    findings = section_text(items["Findings"])
    assert (
        findings.startswith("No findings are reported.")
        and "outside the model's validated input domain" in findings
    )
    assert "score" in findings and "threshold -1.0" in findings
    assert section_text(items["Impressions"]).startswith("No impression")
    assert items["Comment"].TextValue.startswith("NOT REPORTED.")
    assert "labeler" not in items["Summary/Summary"].TextValue  # nothing generated, nothing labelled
    assert items["Input domain check"].ConceptCodeSequence[0].CodeValue == "IDC-OUT"


def test_withhold_as_rejection_writes_a_record_and_no_sr(
    dicom_dir: Path, tmp_path: Path, generators: dict[str, ReportGenerator]
) -> None:
    result = _run(dicom_dir, tmp_path, generators["out"], ood_policy="withhold", ood_withhold_as="rejection")
    assert result.srs == [] and result.pdfs == [] and result.verdicts == ["out_of_domain"]
    [rejection] = result.rejections
    record = json.loads(Path(rejection.path).read_text())
    assert record["status"] == "rejected" and "outside the model's validated input domain" in record["reason"]
    assert "threshold -1.0" in record["reason"] and record["files"] == [SMALL_CHEST_FILE]


@pytest.mark.parametrize(
    ("model", "code", "said"), [("in", "IDC-IN", "within"), ("unchecked", "IDC-NONE", "no input")]
)
def test_in_domain_and_unchecked_reports_say_so(
    dicom_dir: Path, tmp_path: Path, generators: dict[str, ReportGenerator], model: str, code: str, said: str
) -> None:
    result = _run(dicom_dir, tmp_path, generators[model], ood_policy="withhold")
    sr, items = _check(result.srs[0])
    assert sr.SeriesDescription == AppSettings().sr_series_description
    assert "Comment" not in items and items["Input domain check"].ConceptCodeSequence[0].CodeValue == code
    assert said in items["Summary/Summary"].TextValue
    assert ("Input domain score" in items) == (model == "in")


def test_bad_policy_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ood_policy"):
        AppSettings.from_dict({"ood_policy": "ignore"})
    with pytest.raises(ValueError, match="ood_withhold_as"):
        AppSettings.from_dict({"ood_withhold_as": "pdf"})
    with pytest.raises(ValueError, match="64"):
        AppSettings.from_dict({"ood_sr_series_description": "x" * 65})
