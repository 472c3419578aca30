"""Attenuation map of the left lateral view of a case (anterior on the image left).

Both lungs superimposed, heart anterior-inferior, spine posterior; findings as a lateral shows them.
:func:`uar.synthetic.render.render` exposes it. See docs/synthetic-data.md.
"""

from __future__ import annotations

import math

import numpy as np

import uar.synthetic.fmath as fmath
from uar.synthetic.anatomy import MM_PER_UNIT, lung_geometry, vessel_tree, zone_y
from uar.synthetic.case import Case
from uar.synthetic.raster import Canvas, bezier, blur, disc, ellipse, lowfreq, smooth


def lateral_attenuation(case: Case, cv: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Attenuation map of the left lateral view (anterior on the image left), (H, W)."""
    a, f = case.anatomy, case.findings
    x, y = cv.x, cv.y
    soft = max(cv.px_unit, 0.006)
    hyper = f.hyperinflation
    depth = 1.08 if hyper else 1.0  # antero-posterior diameter

    # body
    front = -0.62 * depth + 0.25 * smooth(-0.55, -1.0, y)
    back = 0.78
    body = np.sqrt(np.clip(1.0 - ((x - (front + back) / 2) / ((back - front) / 2)) ** 2, 0.0, 1.0))
    att = a.tissue * (1.0 * body + 0.35 * smooth(0.0, 0.12, body)) * 1.1
    att += 0.25 * disc(x, y, -0.2, -0.75, 0.3, 0.2, 0.1)  # arms raised in front of the face

    # lungs (both superimposed)
    dia = a.diaphragm_y + (0.12 if hyper else 0.0) - 0.05 * bool(f.atelectasis)
    att += 0.2 * smooth(dia, dia + 0.3, y) * body  # abdomen
    cx, cy, rx, ry = 0.02, dia - 0.05, 0.55 * depth, dia - 0.05 - a.apex_y
    e = ellipse(x, y, cx, cy, rx, ry)
    u = np.clip((x + 0.5) / 1.05, 0.0, 1.0)
    y_dia = dia - 0.12 + 0.22 * fmath.power(u, 1.6) - (0.04 if hyper else 0.1) * fmath.sin(math.pi * u)
    lung = smooth(1.0 + soft / rx, 1.0 - soft / rx, e) * smooth(y_dia + soft, y_dia - soft, y)
    air = lung * (0.35 + 0.65 * np.sqrt(np.clip(1.0 - e, 0.0, 1.0)))
    air *= 1.0 + 0.12 * hyper + 0.06 * lowfreq(rng, cv.size, 6)

    # heart and great vessels
    hs = f.ctr / 0.46
    heart = disc(x, y, -0.22 - 0.03 * (hs - 1), dia - 0.2, 0.27 * hs, 0.3 * min(hs, 1.3), soft)
    arch = np.abs(ellipse(x, y, 0.1, -0.2, 0.2, 0.17) - 1.0) * 0.18
    aorta = smooth(0.05, 0.03, arch) * smooth(-0.18, -0.26, y)
    heart_core = smooth(
        1.0, 0.5, ellipse(x, y, -0.22 - 0.03 * (hs - 1), dia - 0.2, 0.27 * hs, 0.3 * min(hs, 1.3))
    )
    med = np.maximum(0.7 * heart + 0.3 * heart_core, 0.25 * aorta)
    if f.mediastinal_widening:
        med = np.maximum(med, 0.7 * disc(x, y, -0.3, -0.35, 0.18, 0.2, 0.05))
    air *= 1.0 - med
    att += 0.05 * heart_core
    att += 0.15 * fmath.exp(-(((x - 0.05) / 0.08) ** 2) - ((y + 0.08) / 0.12) ** 2)  # hila
    trees = [vessel_tree(rng, (0.05, -0.08), sign, 0.8) for sign in (1, -1)]
    vessels = blur(cv.lines(*(np.concatenate(parts) for parts in zip(*trees, strict=True))), 0.6) * lung
    trachea = smooth(0.045, 0.03, np.abs(x - (-0.06 + 0.16 * (y + 1.0) / 0.8))) * smooth(-0.2, -0.28, y)
    att -= 0.2 * trachea

    # findings
    if f.effusions:
        h = (0.1, 0.2, 0.33)[max(e.grade for e in f.effusions) - 1] * (1.2 if len(f.effusions) == 2 else 1.0)
        # fills the posterior sulcus first (u**4 as products: no CPU-dependent pow)
        level = dia + 0.12 - h - 1.2 * h * ((u * u) * (u * u)) - 0.25 * (1.0 - u)
        fluid = smooth(level - 0.01, level + 0.06, y) * smooth(1.06, 1.0, e)
        air *= 1.0 - (0.65 if len(f.effusions) == 1 else 0.9) * fluid
        vessels *= 1.0 - fluid
    att += 0.12 * vessels
    centres = {"upper": (0.15, -0.45), "middle": (-0.25, 0.0), "lower": (0.35, dia - 0.15)}
    for op in f.opacities:
        ox, oy = centres[op.zone]
        noise = np.clip(lowfreq(rng, cv.size, 7), -1.5, 1.5)
        eo = ellipse(x, y, ox, oy, op.extent * 1.2, op.extent)
        if op.kind == "consolidation":
            dens = smooth(1.15, 0.6, eo + 0.12 * noise)
            air *= 1.0 - 0.7 * dens
            att += 0.1 * dens
        elif op.kind == "opacity":
            air *= 1.0 - 0.5 * smooth(1.15, 0.3, eo + 0.25 * noise)
        else:
            fine = lowfreq(rng, cv.size, 28)
            air *= 1.0 - 0.6 * smooth(1.3, 0.8, eo) * smooth(0.0, 0.9, fine + 0.3)
    lg = lung_geometry(case)
    for les in f.lesions:
        r = les.diameter_mm / 2.0 / MM_PER_UNIT
        ly = zone_y(lg[les.side], les.zone, les.y)
        lx = -0.4 + les.depth * 0.8
        dens = disc(x, y, lx, ly, r, r, soft)
        air *= 1.0 - 0.5 * dens
        att += 0.2 * dens
    if f.edema:
        haze = fmath.exp(-(((x - 0.0) / 0.35) ** 2) - ((y + 0.05) / 0.35) ** 2)
        air *= 1.0 - (0.25 if f.edema == 1 else 0.5) * haze
    if f.atelectasis:
        y0 = dia - 0.05
        plate = [np.array([[0.0, y0 - 0.12], [0.45, y0 + 0.02]])]
        band = np.clip(cv.lines(plate, [0.025]), 0.0, 1.0) * lung
        air *= 1.0 - 0.8 * band
    if f.pneumothorax is not None:
        air *= 1.0 + 0.15 * disc(x, y, 0.0, a.apex_y + 0.12, 0.3, 0.12, 0.05) * lung
    att -= 0.8 * air

    # bones: thoracic spine (bodies with disc spaces), sternum, posterior ribs, scapula
    sx = 0.56 + 0.03 * fmath.cos(math.pi * (y + 0.2))
    phase = y / 0.09
    fr = phase - np.floor(phase)
    bodies = smooth(0.075, 0.06, np.abs(x - sx)) * (
        0.75 + 0.25 * smooth(0.0, 0.12, fr) * smooth(0.9, 0.78, fr)
    )
    att += 0.3 * bodies + 0.12 * smooth(0.04, 0.02, np.abs(x - sx - 0.14)) * smooth(-1.0, -0.8, y)
    front_x = -0.6 * depth
    sternum = smooth(0.03, 0.018, np.abs(x - front_x)) * smooth(-0.6, -0.55, y) * smooth(0.25, 0.2, y)
    att += 0.3 * sternum
    phi = (y - 0.45 * x - (a.apex_y - 0.15)) / (a.rib_spacing * 1.1)
    frr = phi - np.floor(phi)
    rib = smooth(0.0, 0.08, frr) * smooth(0.36, 0.28, frr) * smooth(-0.1, 0.2, x) * smooth(0.75, 0.6, x)
    att += 0.08 * rib * (phi >= 0) * (phi < 12)
    att += 0.1 * disc(x, y, 0.45, -0.45, 0.18, 0.25, 0.06)  # scapulae

    dev = f.devices
    items: list[np.ndarray] = []
    widths_d: list[float] = []
    if dev.pacemaker:
        att += 2.0 * disc(x, y, front_x + 0.02, -0.58, 0.03, 0.07, soft)
        items += [bezier([(front_x + 0.03, -0.55), (-0.2, -0.65), (-0.05, -0.25), (-0.35, dia - 0.1)])]
        widths_d.append(0.008)
    if dev.central_line:
        items.append(bezier([(-0.05, -1.0), (-0.08, -0.6), (-0.1, -0.4), (-0.12, -0.18)]))
        widths_d.append(0.008)
    if dev.et_tube:
        items.append(np.array([[-0.06, -1.0], [0.02, -0.4]]))
        widths_d.append(0.014)
    if dev.sternotomy:
        for k in range(6):
            yy = -0.45 + 0.11 * k
            items.append(np.array([[front_x - 0.015, yy], [front_x + 0.015, yy + 0.01]]))
            widths_d.append(0.008)
    if items:
        att += 0.9 * np.clip(cv.lines(items, widths_d), 0.0, 1.5)
    return att
