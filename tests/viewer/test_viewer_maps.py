"""The attention-map Secondary Capture where the radiologist sees it: a synthetic two-view study
(within the default model's input domain, so the report has maps) routed Orthanc -> node (write_maps)
-> Orthanc, then OHIF in headless Chromium shows radiograph | attention map | SR side by side.

Real parts only, as in test_viewer.py. The screenshot is kept under ``$UAR_ARTIFACTS``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from plugin.viewer.browser import check_view, colour_share, inspect_study
from plugin.viewer.cli import _modalities, add_arguments
from plugin.viewer.stack import ViewerStack, referenced_images
from tests.conftest import require_tool
from tests.viewer.test_viewer import ARTIFACTS
from uar.synthetic.dicom import write_study
from uar.synthetic.sampling import sample_case

SEED = 4  # within the default model's input domain (tests/app/test_maps_writer.py checks it)
MIN_COLOUR_SHARE = 0.01  # coloured share of the attention-map viewport's middle (a grey image: ~0)


@pytest.mark.slow
@pytest.mark.network
def test_ohif_shows_the_attention_map_beside_the_image_and_the_sr(tmp_path: Path) -> None:
    for tool in ("Orthanc", "chromium", "npm", "node"):
        require_tool(tool)
    t0 = time.monotonic()
    case = sample_case(np.random.default_rng(SEED), seed=SEED)
    files = write_study(tmp_path / "study", case, SEED, size=256, transfer_syntax=ExplicitVRLittleEndian)
    for path in (files.frontal, files.lateral):
        # OHIF 3.13.2 cannot load an image with VOI LUT Function LINEAR (the default when absent;
        # docs/viewer.md); `uar viewer` removes it from its demo study the same way
        ds = pydicom.dcmread(path)
        del ds.VOILUTFunction
        ds.save_as(path, enforce_file_format=True)
    image_modality = str(pydicom.dcmread(files.frontal, stop_before_pixels=True).Modality)
    with ViewerStack(tmp_path / "stack", write_pdf=False, write_maps=True, beam_size=1) as stack:
        routed = stack.route([files.frontal, files.lateral], timeout_s=180)
        assert routed.study_uid == files.study_uid
        assert len(routed.map_instances) == 2  # one picture per view, back in the same study
        assert len(referenced_images(routed.sr)) == 2  # and the SR references both
        series = stack.orthanc.series_of_study(routed.orthanc_id)
        assert sorted(s["MainDicomTags"]["Modality"] for s in series) == sorted(
            [image_modality, image_modality, "OT", "SR"]
        )
        texts = routed.report_texts()
        assert len(texts) >= 2 and all(texts)
        shot = tmp_path / "viewer-maps.png"
        result = inspect_study(
            stack.url, files.study_uid, shot, modalities=(image_modality, "OT", "SR"), texts=texts
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "viewer-maps-test.png")
        problems = check_view(result)
        assert problems == [], f"{problems}; screenshot {ARTIFACTS}"
        assert [v["modality"] for v in result.raw["viewports"]] == [image_modality, "OT", "SR"]
        assert colour_share(result, "OT") > MIN_COLOUR_SHARE  # OHIF draws the SC in colour
        assert colour_share(result, image_modality) < MIN_COLOUR_SHARE / 10  # the radiograph stays grey
        loads = result.raw["attempts"]
    took = time.monotonic() - t0
    print(f"viewer round trip with attention maps and browser check: {took:.0f} s, {loads} load(s)")


def test_uar_viewer_maps_option_lays_out_the_attention_maps(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--maps"]).maps and not parser.parse_args([]).maps
    case = sample_case(np.random.default_rng(SEED), seed=SEED)
    files = write_study(tmp_path, case, SEED, size=64, transfer_syntax=ExplicitVRLittleEndian)
    modality = str(pydicom.dcmread(files.frontal, stop_before_pixels=True).Modality)
    assert _modalities(False, [files.frontal], True) == [modality, "OT", "SR"]
    assert _modalities(True, [files.frontal]) == [modality, "SR", "DOC"]
