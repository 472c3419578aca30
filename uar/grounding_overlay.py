"""Pictures of grounding maps: a view with each sentence's map blended in its own colour, the
sentence's number at the map's maximum and a legend of the numbered sentences under the image.

Used by ``uar generate --maps`` and by the application's attention-map Secondary Capture. The maps
say where the decoder looked while writing a sentence, not where a finding is: the legend says so.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from uar.grounding import SentenceMap

# one colour per sentence (RGB), distinguishable on a grey radiograph; the 9th sentence reuses the 1st
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)
CAPTION = "AI attention map, not for diagnosis: where the model looked while writing each sentence."
LOW = 0.6  # map values below this (of the sentence's maximum) are not coloured: the smoothed maps are wide
ALPHA = 0.55  # opacity of a map at its maximum


def colour(k: int) -> tuple[int, int, int]:
    """The colour of sentence ``k`` (0-based)."""
    return PALETTE[k % len(PALETTE)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_overlay(
    image: np.ndarray,
    maps: Sequence[SentenceMap],
    view: int,
    *,
    max_side: int = 1024,
    min_side: int = 512,
    view_name: str = "",
) -> np.ndarray:
    """The view ``image`` (H, W) float in [0, 1], display polarity, with the sentences' maps of
    ``view`` blended in and a legend below: RGB uint8 (H' + legend, W'), the image scaled so that
    its longer side is between ``min_side`` and ``max_side`` pixels."""
    if image.ndim != 2:
        raise ValueError(f"expected a grey image (H, W), got shape {image.shape}")
    h, w = image.shape
    scale = min(max(1.0, min_side / max(h, w)), max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR
    )
    rgb = np.asarray(grey.convert("RGB"), dtype=np.float32)  # (h', w', 3)
    for k, m in enumerate(maps):
        heat = m.upsampled(view, (size[1], size[0]))  # (h', w') in [0, 1]
        alpha = (ALPHA * np.clip((heat - LOW) / (1.0 - LOW), 0.0, 1.0))[..., None]
        rgb = rgb * (1.0 - alpha) + np.asarray(colour(k), dtype=np.float32) * alpha
    canvas = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    mark = max(12, size[0] // 40)
    label_font = _font(mark)
    for k, m in enumerate(maps):
        x, y = m.peak(view, (size[1], size[0]))  # the brightest pixel of the map drawn
        cx, cy = x * size[0], y * size[1]
        r = mark * 0.8
        draw.ellipse(
            (cx - r, cy - r, cx + r, cy + r), fill=(0, 0, 0), outline=colour(k), width=max(2, mark // 6)
        )
        draw.text((cx, cy), str(k + 1), fill=colour(k), font=label_font, anchor="mm")
    legend = _legend(maps, view, size[0], view_name)
    out = Image.new("RGB", (size[0], size[1] + legend.height), (0, 0, 0))
    out.paste(canvas, (0, 0))
    out.paste(legend, (0, size[1]))
    return np.asarray(out)


def _legend(maps: Sequence[SentenceMap], view: int, width: int, view_name: str) -> Image.Image:
    """Black panel ``width`` wide: the caption, then "k. sentence (share of attention on this view)"."""
    size = max(11, width // 55)
    font = _font(size)
    chars = max(20, int(width / (size * 0.55)))
    lines: list[tuple[str, tuple[int, int, int]]] = []
    where = f" {view_name.capitalize()} view." if view_name else ""
    lines += [(t, (255, 255, 255)) for t in textwrap.wrap(CAPTION + where, chars)]
    for k, m in enumerate(maps):
        text = f"{k + 1}. {m.sentence} ({m.share(view):.0%} of its attention on this view)"
        lines += [(t, colour(k)) for t in textwrap.wrap(text, chars, subsequent_indent="   ")]
    step = round(size * 1.35)
    panel = Image.new("RGB", (width, step * len(lines) + size), (0, 0, 0))
    draw = ImageDraw.Draw(panel)
    for i, (text, fill) in enumerate(lines):
        draw.text((size // 2, size // 2 + i * step), text, fill=fill, font=font)
    return panel
