"""Headless Chromium looks at a study in OHIF: what a radiologist would see, measured.

:func:`inspect_study` runs ``inspect_study.js`` (Node.js + ``puppeteer-core`` + Debian ``chromium``):
it opens ``/viewer?StudyInstanceUIDs=<uid>``, lays out one viewport per modality (``CR | SR | DOC``)
with OHIF's own ``setViewportGridLayout`` command and puts one series in each (what a user does by
choosing a layout and double-clicking thumbnails), then returns the on-screen rectangles of the
expected texts, of the image canvases and of the PDF ``<object>``, and writes a screenshot.

:func:`check_view` turns that into a list of problems (empty = the report is readable beside the
image): every expected text found, its rectangles inside its viewport and the window; the image
viewports' pixels on the screenshot not blank (the radiograph and, when laid out, the attention-map
Secondary Capture, Modality OT); the PDF viewport's pixels read by Tesseract OCR
(Debian ``tesseract-ocr``) containing the report's words. The PDF text is drawn by Chromium's PDF
plug-in and is not in the page's DOM, hence OCR.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from plugin.viewer.assets import chromium, ensure_puppeteer, find_tool, node_js

SCRIPT = Path(__file__).with_name("inspect_study.js")
# CSS pixels of the browser window. In a 1 x 3 layout each viewport is then 340-425 px wide; from
# about 500 px Chromium's PDF viewer opens its thumbnail pane and the page shrinks below OCR size.
WINDOW = (1600, 900)
EDGE_PX = 1.0  # tolerance of the "inside the viewport" check, CSS pixels
MIN_IMAGE_STD = 8.0  # grey-level standard deviation of a drawn radiograph (a blank viewport is ~0)
IMAGE_MODALITIES = ("CR", "DX", "OT")  # viewports checked for drawn pixels (OT: the attention maps)
# When the PDF viewport counts as painted (inspect_study.js, measurePage): rows whose pixels are
# mostly at least WHITE grey levels make the page (at least MIN_PAGE_ROWS CSS px of them; the panel
# around it is dark grey), and at least MIN_INK of the page's pixels are below INK (its text drawn).
PDF_PAINT = {"white": 235, "ink": 160, "min_page_rows": 60, "min_ink": 0.004}
# Share of the report's words (4+ letters) OCR must read in the PDF viewport. The fitted A4 page is
# small: in a 340 px viewport Tesseract reads ~45 % of the words, in a 425 px one nearly all; a blank,
# failed or foreign page reads ~0 %.
MIN_OCR_WORD_SHARE = 0.35


@dataclass
class ViewResult:
    """What :func:`inspect_study` measured (rectangles in CSS pixels) and where the screenshot is."""

    screenshot: Path
    scale: float
    raw: dict[str, Any]
    ocr_text: str = ""
    problems: list[str] = field(default_factory=list)

    def viewport(self, modality: str) -> dict[str, Any] | None:
        """The viewport showing ``modality`` (``id``, ``modality``, ``rect``), if any."""
        return next((v for v in self.raw.get("viewports", []) if v["modality"] == modality), None)


def inspect_study(
    viewer_url: str,
    study_uid: str,
    screenshot: Path,
    *,
    modalities: Sequence[str] = ("CR", "SR", "DOC"),
    texts: Sequence[str] = (),
    window: tuple[int, int] = WINDOW,
    scale: float = 3.0,
    timeout_s: float = 90.0,
    settle_s: float = 1.0,
    paint_wait_s: float = 25.0,
    attempts: int = 6,
) -> ViewResult:
    """Open ``study_uid`` in the OHIF at ``viewer_url``, lay out ``modalities`` side by side, measure.

    ``texts`` are strings that must appear in the page (matched with white space normalised).
    ``scale`` is the device pixel ratio of the screenshot (Chromium draws the PDF page at it; 3 gives
    OCR enough pixels even when the PDF viewport is only ~340 px wide).
    The page counts as drawn when the middle of the image viewport is not blank and the PDF viewport
    shows a page with text (:data:`PDF_PAINT`); a load that is not drawn after ``paint_wait_s`` is
    reloaded, up to ``attempts`` loads (Chromium's headless WebGL draw and PDF plug-in now and then
    never paint a freshly laid out viewport; a user presses F5). The measures of the last look are in
    ``raw["image_paint"]``, ``raw["pdf_paint"]`` and the number of loads in ``raw["attempts"]``.
    Raises ``RuntimeError`` with the browser's message if the page never showed the study.
    """
    modules = ensure_puppeteer()
    args = {
        "chromium": chromium(),
        "url": f"{viewer_url}/viewer?StudyInstanceUIDs={study_uid}",
        "modalities": list(modalities),
        "texts": list(texts),
        "screenshot": str(screenshot),
        "width": window[0],
        "height": window[1],
        "scale": scale,
        "timeout_ms": int(timeout_s * 1000),
        "settle_ms": int(settle_s * 1000),
        "paint_wait_ms": int(paint_wait_s * 1000),
        "attempts": attempts,
        "paint": {**PDF_PAINT, "scale": scale, "min_image_std": MIN_IMAGE_STD},
    }
    env = {**os.environ, "NODE_PATH": str(modules)}
    proc = subprocess.run(
        [node_js(), str(SCRIPT), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=(2 * timeout_s + paint_wait_s) * attempts + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the browser could not show the study: {proc.stderr.strip()[-1500:]}")
    return ViewResult(screenshot=screenshot, scale=scale, raw=json.loads(proc.stdout))


def _inside(rect: dict[str, float], box: dict[str, float]) -> bool:
    return (
        rect["x"] >= box["x"] - EDGE_PX
        and rect["y"] >= box["y"] - EDGE_PX
        and rect["x"] + rect["width"] <= box["x"] + box["width"] + EDGE_PX
        and rect["y"] + rect["height"] <= box["y"] + box["height"] + EDGE_PX
    )


def _crop(result: ViewResult, rect: dict[str, float], mode: str = "L") -> Image.Image:
    s = result.scale
    with Image.open(result.screenshot) as img:
        box = (int(rect["x"] * s), int(rect["y"] * s), int((rect["x"] + rect["width"]) * s))
        return img.convert(mode).crop((*box, int((rect["y"] + rect["height"]) * s)))


def middle_of(rect: dict[str, float]) -> dict[str, float]:
    """The middle half (in each direction) of a viewport, away from the text overlays in its corners."""
    middle = {"x": rect["x"] + rect["width"] / 4, "y": rect["y"] + rect["height"] / 4}
    return middle | {"width": rect["width"] / 2, "height": rect["height"] / 2}


def colour_share(result: ViewResult, modality: str, min_chroma: int = 40) -> float:
    """Share of the screenshot's pixels in the middle of the ``modality`` viewport that are coloured
    (largest minus smallest RGB channel at least ``min_chroma``); 0 when there is no such viewport."""
    vp = result.viewport(modality)
    if vp is None or vp["rect"] is None:
        return 0.0
    rgb = np.asarray(_crop(result, middle_of(vp["rect"]), "RGB"), dtype=np.int16)  # (h, w, 3)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) >= min_chroma).mean())


def ocr(image: Image.Image) -> str:
    """Text Tesseract reads in ``image`` (English, page segmentation "single column of text").

    ``OMP_THREAD_LIMIT=1``: Tesseract's OpenMP threads spin for minutes on a loaded machine.
    """
    with tempfile.TemporaryDirectory(prefix="uar-ocr-") as tmp:
        path = Path(tmp) / "crop.png"
        image.save(path)
        proc = subprocess.run(
            [find_tool("tesseract", package="tesseract-ocr"), str(path), "stdout", "-l", "eng", "--psm", "4"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
    return proc.stdout


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z]{4,}", text)]


def check_view(result: ViewResult, *, pdf_words_from: str = "") -> list[str]:
    """Problems a radiologist would have with the view (empty list = fine); also stored in ``problems``.

    ``pdf_words_from``: text whose words (4+ letters) must be read by OCR in the PDF viewport
    (skipped when empty or when no DOC viewport was laid out).
    """
    raw = result.raw
    problems: list[str] = []
    win = {"x": 0.0, "y": 0.0, "width": raw["window"]["width"], "height": raw["window"]["height"]}
    boxes = {v["id"]: v["rect"] for v in raw["viewports"] if v["rect"]}
    for missing in [v["modality"] for v in raw["viewports"] if not v["rect"]]:
        problems.append(f"the {missing} viewport has no element on the page")
    for t in raw["texts"]:
        short = t["text"][:40]
        if not t["found"] or not t["rects"]:
            problems.append(f"text not shown: {short!r}")
            continue
        box = boxes.get(t["viewport"] or "", win)
        outside = [r for r in t["rects"] if not (_inside(r, box) and _inside(r, win))]
        if outside:
            problems.append(f"text cut off at the viewport edge: {short!r} ({outside[0]})")
    for image_vp in [v for v in raw["viewports"] if v["modality"] in IMAGE_MODALITIES]:
        what = "image" if image_vp["modality"] != "OT" else "attention-map (OT)"
        if not any(c["viewport"] == image_vp["id"] for c in raw["canvases"]):
            problems.append(f"no image canvas in the {what} viewport")
        elif image_vp["rect"] is not None:
            std = float(np.asarray(_crop(result, middle_of(image_vp["rect"])), dtype=np.float32).std())
            if std < MIN_IMAGE_STD:
                seen = raw.get("image_paint")
                log = raw.get("paint_log", [])[-6:]
                problems.append(
                    f"the {what} viewport looks blank (grey-level std {std:.1f}; browser {seen}, "
                    f"last looks [load, viewport, std] {log})"
                )
    doc_vp = result.viewport("DOC")
    if doc_vp is not None:
        if raw["pdf"] is None:
            problems.append("no PDF object in the page")
        elif pdf_words_from:
            crop = _crop(result, raw["pdf"]["rect"])  # fit-to-width A4 text is small: upscale for OCR
            result.ocr_text = ocr(crop.resize((crop.width * 2, crop.height * 2), Image.Resampling.LANCZOS))
            want = sorted(set(_words(pdf_words_from)))
            read = set(_words(result.ocr_text))
            share = sum(w in read for w in want) / max(len(want), 1)
            if share < MIN_OCR_WORD_SHARE or "draft" not in result.ocr_text.lower():
                seen = raw.get("pdf_paint")
                problems.append(f"OCR read {share:.0%} of the report's words in the PDF viewport ({seen})")
    if raw["external_requests"]:
        problems.append(f"requests to other hosts: {raw['external_requests'][:3]}")
    result.problems = problems
    return problems
