"""The report where the radiologist reads it: Orthanc -> node -> Orthanc, then OHIF in headless Chromium.

Real parts only: Debian Orthanc + DICOMweb plugin, the node with the embedded default model, OHIF's
prebuilt dist (npm ``@ohif/app``), Chromium driven by puppeteer-core, Tesseract for the PDF panel.
The screenshot is kept under ``$UAR_ARTIFACTS`` (default ``.cache/artifacts``) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from plugin.viewer.browser import check_view, inspect_study
from plugin.viewer.stack import ViewerStack
from tests.conftest import REPO, require_tool
from tests.node.conftest import FRONTAL, make_study

ARTIFACTS = Path(os.environ.get("UAR_ARTIFACTS") or REPO / ".cache" / "artifacts")


@pytest.mark.slow
@pytest.mark.network
def test_ohif_shows_the_sr_and_the_pdf_beside_the_image(dicom_dir: Path, tmp_path: Path) -> None:
    for tool in ("Orthanc", "chromium", "tesseract", "npm", "node"):
        require_tool(tool)
    t0 = time.monotonic()
    study_uid, files = make_study(dicom_dir, tmp_path / "study", files=(FRONTAL,))
    with ViewerStack(tmp_path / "stack", write_pdf=True, beam_size=1) as stack:
        routed = stack.route(files, timeout_s=180)
        assert routed.study_uid == study_uid  # the SR came back into the same study
        assert routed.pdf_instance is not None
        series = stack.orthanc.series_of_study(routed.orthanc_id)
        assert sorted(s["MainDicomTags"]["Modality"] for s in series) == ["CR", "DOC", "SR"]
        texts = routed.report_texts()
        assert len(texts) >= 2 and all(texts)
        shot = tmp_path / "viewer.png"
        # 1600 x 1200: the default model withholds its findings on this real radiograph (outside its
        # synthetic input domain), and the SR's statement of why is taller than a 900 px window
        result = inspect_study(
            stack.url, study_uid, shot, modalities=("CR", "SR", "DOC"), texts=texts, window=(1600, 1200)
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "viewer-test.png")
        problems = check_view(result, pdf_words_from=routed.report_plain())
        assert problems == [], f"{problems}; OCR: {result.ocr_text[:300]!r}; screenshot {ARTIFACTS}"
        assert [v["modality"] for v in result.raw["viewports"]] == ["CR", "SR", "DOC"]
        sr_viewport = result.viewport("SR")
        assert all(t["viewport"] == sr_viewport["id"] for t in result.raw["texts"])
        assert "draft" in result.ocr_text.lower()
    print(f"viewer round trip and browser check: {time.monotonic() - t0:.0f} s")
