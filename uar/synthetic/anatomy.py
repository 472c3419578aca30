"""Anatomy geometry shared by the frontal and lateral renderers and the finding regions.

Lung fields of the frontal view (:func:`lung_geometry`), lung zones (:func:`zone_y`) and the branching
pulmonary vessel trees (:func:`vessel_tree`), in anatomy units (image half-width at scale 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import uar.synthetic.fmath as fmath
from uar.synthetic.case import AirspaceOpacity, Case, Lesion, RibFracture, Side, Zone

MM_PER_UNIT = 180.0  # one anatomy unit (image half-width at scale 1) is about 18 cm
SIDES: dict[Side, int] = {"right": -1, "left": 1}  # image x sign of each patient side (frontal)


@dataclass
class Lung:
    """Geometry of one lung on the frontal view (lateral distance ``xs = sign * x``)."""

    sign: int
    cx: float
    cy: float
    rx: float
    ry: float
    diaphragm: float  # costophrenic angle height
    dome: float


def lung_geometry(case: Case) -> dict[Side, Lung]:
    """Both lung fields of the frontal view (hyperinflation and atelectatic volume loss included)."""
    a, f = case.anatomy, case.findings
    lw = a.lung_width * (1.04 if f.hyperinflation else 1.0)
    apex = a.apex_y - (0.04 if f.hyperinflation else 0.0)
    out: dict[Side, Lung] = {}
    for side, sign in SIDES.items():
        dia = a.diaphragm_y + (0.04 if side == "left" else 0.0) + (0.12 if f.hyperinflation else 0.0)
        dia -= 0.07 * sum(1 for t in f.atelectasis if t.side == side)
        rx = (lw - 0.05) / 2.0
        cy = dia - 0.06
        out[side] = Lung(sign, 0.05 + rx, cy, rx, cy - apex, dia, 0.05 if f.hyperinflation else 0.13)
    return out


def zone_y(lung: Lung, zone: Zone, t: float) -> float:
    """Height at fraction ``t`` (0 top .. 1 bottom) of a lung zone."""
    top = lung.cy - lung.ry
    bounds = {
        "upper": (top + 0.12, top + 0.45),
        "middle": (top + 0.45, top + 0.8),
        "lower": (top + 0.8, lung.diaphragm - lung.dome - 0.02),
    }[zone]
    return bounds[0] + t * (bounds[1] - bounds[0])


@dataclass(frozen=True)
class Heart:
    """The heart shadow of the frontal view: an ellipse in anatomy units (x, not ``xs``)."""

    width: float  # transverse diameter: cardiothoracic ratio x thoracic width (AP magnified)
    cx: float
    cy: float
    rx: float
    ry: float


def frontal_heart(case: Case, lungs: dict[Side, Lung]) -> Heart:
    """Where the frontal renderer draws the heart (2/3 of it to the patient's left)."""
    f = case.findings
    lw = lungs["right"].cx + lungs["right"].rx
    width = f.ctr * 2.0 * lw * (1.06 if case.acquisition.projection == "AP" else 1.0)
    return Heart(
        width, 0.15 * width, case.anatomy.diaphragm_y - 0.08, width / 2.0, 0.32 + 0.15 * (f.ctr - 0.45)
    )


def opacity_centre(lung: Lung, op: AirspaceOpacity, heart_width: float) -> tuple[float, float]:
    """Centre ``(xs, y)`` of an airspace opacity on the frontal view; beside the heart, not behind it."""
    cx = lung.cx
    if op.zone != "upper":
        border = (0.65 if op.side == "left" else 0.35) * heart_width  # lateral heart border (xs)
        cx = min(max(lung.cx, border + 0.8 * op.extent), lung.cx + lung.rx - 0.5 * op.extent)
    return cx, zone_y(lung, op.zone, 0.5)


def lesion_centre(lung: Lung, les: Lesion) -> tuple[float, float]:
    """Centre ``(xs, y)`` of a nodule or mass on the frontal view."""
    return 0.14 + les.x * (lung.cx + lung.rx - 0.26), zone_y(lung, les.zone, les.y)


def fracture_point(case: Case, lung: Lung, fx: RibFracture) -> tuple[float, float]:
    """Where the broken posterior rib breaks on the frontal view, ``(xs, y)`` (centre of the callus)."""
    xb = 0.12 + fx.position * (lung.cx + lung.rx - 0.15)
    yb = lung.cy - lung.ry - 0.08 - 0.25 * xb + 0.9 * xb**2 + (fx.rib + 0.2) * case.anatomy.rib_spacing
    return xb, yb


def vessel_tree(
    rng: np.random.Generator, start: tuple[float, float], sign: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Branching pulmonary vessels from a hilum, four generations of random-walk branches.

    Returns polylines (M, 7, 2), widths (M,) and intensities (M,), anatomy units.
    """
    n_steps = 6
    base = np.array([-1.8, -1.45, -1.1, -0.7, -0.3, 0.1, 0.5, 0.9, 1.3, 1.6])  # radians from lateral
    starts = np.asarray(start) + rng.normal(0.0, (0.03, 0.06), size=(len(base), 2))
    angles = base + rng.normal(0.0, 0.12, len(base))
    lengths = rng.uniform(0.16, 0.28, len(base)) * scale
    width = 0.014 * scale
    polys, widths, vals = [], [], []
    for level in range(4):
        m = len(angles)
        a = angles[:, None] + np.cumsum(rng.normal(0.0, 0.12, (m, n_steps)), axis=1)  # (m, 6)
        steps = (lengths / n_steps)[:, None, None] * np.stack([fmath.cos(a) * sign, fmath.sin(a)], axis=-1)
        pts = np.concatenate(
            [starts[:, None], starts[:, None] + np.cumsum(steps, axis=1)], axis=1
        )  # (m, 7, 2)
        polys.append(pts)
        widths.append(np.full(m, width))
        vals.append(np.full(m, 1.0 - 0.2 * level))
        da = rng.uniform(0.25, 0.55, (m, 2)) * np.array([1.0, -1.0])
        starts = np.concatenate([pts[:, 3] if level < 2 else pts[:, -1], pts[:, -1]])
        angles = np.concatenate([a[:, -1] + da[:, 0], a[:, -1] + da[:, 1]])
        lengths = np.concatenate([lengths, lengths]) * 0.62
        width *= 0.68
    return np.concatenate(polys), np.concatenate(widths), np.concatenate(vals)
