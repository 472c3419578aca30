"""Render one view of a synthetic case: attenuation map, then exposure, noise and collimation.

:func:`render` draws the frontal (PA or AP) or lateral view of a case analytically: an attenuation
map is built in anatomy coordinates (:mod:`uar.synthetic.frontal`, :mod:`uar.synthetic.lateral`),
then exposed, rotated, scaled, collimated and noised. Output is float32 ``(size, size)`` in [0, 1],
display polarity (air dark). ``render(case, view)`` draws its noise and vessels from ``case.seed``
and the view, so the same case always gives the same pixels.
"""

from __future__ import annotations

import math

import numpy as np

import uar.synthetic.fmath as fmath
from uar.synthetic.case import Case, View
from uar.synthetic.frontal import frontal_attenuation
from uar.synthetic.lateral import lateral_attenuation
from uar.synthetic.raster import Canvas, blur, lowfreq, smooth


def expose(att: np.ndarray, case: Case, cv: Canvas, rng: np.random.Generator, view: View) -> np.ndarray:
    """Exposure, detector blur, quantum noise and collimation: attenuation -> [0, 1] display image."""
    acq = case.acquisition
    k = acq.exposure * (0.85 if view == "lateral" else 1.0)
    img = (1.0 - fmath.exp(-k * np.clip(att, 0.0, None))) / (1.0 - math.exp(-k * 2.2))
    img = fmath.power(np.clip(img, 0.0, 1.0), acq.gamma)
    img = blur(img.astype(np.float32), 0.4 * cv.size / 256)
    img += acq.noise * np.sqrt(img + 0.02) * rng.standard_normal(img.shape, dtype=np.float32)
    img += 0.015 * acq.noise / 0.01 * lowfreq(rng, cv.size, 4) * 0.3
    c = (np.arange(cv.size, dtype=np.float32) + 0.5) / cv.size * 2.0 - 1.0
    left, top, right, bottom = acq.collimation
    edge = 1.0 / cv.size
    inside = smooth(left - edge, left + edge, c)[None, :] * smooth(right + edge, right - edge, c)[None, :]
    inside = (
        inside * smooth(top - edge, top + edge, c)[:, None] * smooth(bottom + edge, bottom - edge, c)[:, None]
    )
    fill = 0.93 if acq.collimation_white else 0.0
    img = img * inside + fill * (1.0 - inside)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render(case: Case, view: View, rng: np.random.Generator | None = None, *, size: int = 256) -> np.ndarray:
    """Render one view of a case.

    ``view`` is "frontal" (PA or AP, per ``case.acquisition.projection``) or "lateral" (left
    lateral, anterior on the image left). ``rng`` draws the vessels and noise; by default it is
    seeded from ``case.seed`` and the view, so a case always renders the same pixels.
    Returns float32 (size, size) in [0, 1], display polarity (air dark, bone bright).
    """
    if view not in ("frontal", "lateral"):
        raise ValueError(f"view must be 'frontal' or 'lateral', got {view!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if rng is None:
        rng = np.random.default_rng([case.seed, 0 if view == "frontal" else 1])
    cv = Canvas.make(size, case.acquisition)
    att = frontal_attenuation(case, cv, rng) if view == "frontal" else lateral_attenuation(case, cv, rng)
    return expose(att, case, cv, rng, view)
