"""Attenuation map of the frontal (PA / AP) view of a case.

Body, lungs, mediastinum and heart, hila and vessels, findings, bones and devices in anatomy
coordinates; :func:`uar.synthetic.render.render` exposes it. See docs/synthetic-data.md.
"""

from __future__ import annotations

import math

import numpy as np

import uar.synthetic.fmath as fmath
from uar.synthetic.anatomy import (
    MM_PER_UNIT,
    fracture_point,
    frontal_heart,
    lesion_centre,
    lung_geometry,
    opacity_centre,
    vessel_tree,
)
from uar.synthetic.case import Case, Side
from uar.synthetic.raster import Canvas, bezier, blur, disc, ellipse, lowfreq, smooth


def frontal_attenuation(case: Case, cv: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Attenuation map of the frontal (PA / AP) view, (H, W), about 0 (air) .. 2.5 (metal)."""
    a, f, acq = case.anatomy, case.findings, case.acquisition
    x, y = cv.x, cv.y
    soft = max(cv.px_unit, 0.006)
    ap = acq.projection == "AP"
    lungs = lung_geometry(case)
    spine_x = f.scoliosis * fmath.sin(math.pi * np.clip((y + 0.85) / 1.4, 0.0, 1.0))  # (H, W)

    # body: elliptic cross-section, neck and shoulders, breasts, humeral heads
    wb = a.body_width
    half_w = 0.30 + (wb - 0.30) * np.sqrt(smooth(-1.02, -0.55, y))  # sloping shoulders
    body = np.sqrt(np.clip(1.0 - (x / half_w) ** 2, 0.0, 1.0))
    att = a.tissue * (0.75 * body + 0.3 * smooth(0.0, 0.15, body))
    att += 0.2 * a.tissue * smooth(a.diaphragm_y - 0.05, a.diaphragm_y + 0.25, y) * body  # abdomen
    for s in (-1, 1):
        arm = np.sqrt(np.clip(1.0 - ((s * x - wb - 0.13) / 0.15) ** 2, 0.0, 1.0)) * smooth(-0.86, -0.7, y)
        att += 0.6 * a.tissue * arm + 0.35 * disc(x, y, s * (wb + 0.1), -0.7, 0.11, 0.12, 0.015)
        if a.sex == "F":
            att += 0.16 * a.tissue * disc(x, y, s * 0.48, 0.42, 0.36, 0.26, 0.12)

    # lungs
    air = np.zeros_like(x)
    side_mask: dict[Side, np.ndarray] = {}
    for side, lg in lungs.items():
        xs = lg.sign * x
        e = ellipse(xs, y, lg.cx, lg.cy, lg.rx, lg.ry)
        inside = smooth(1.0 + soft / lg.rx, 1.0 - soft / lg.rx, e)
        y_dia = lg.diaphragm - lg.dome * np.clip(1.0 - ((xs - 0.33) / 0.5) ** 2, 0.0, 1.0)
        mask = inside * smooth(y_dia + soft, y_dia - soft, y) * smooth(0.0, 0.03, xs)
        side_mask[side] = mask
        air += (
            mask * (0.35 + 0.65 * np.sqrt(np.clip(1.0 - e, 0.0, 1.0))) * (1.0 - 0.25 * smooth(-0.1, 0.5, y))
        )
    air *= 1.0 + 0.12 * f.hyperinflation + 0.06 * lowfreq(rng, cv.size, 6)

    # mediastinum: upper band with aortic knob, heart
    upper_w = 0.2 if f.mediastinal_widening else 0.1
    med = smooth(upper_w + soft, upper_w - soft, np.abs(x - 0.3 * spine_x)) * smooth(0.1, -0.05, y)
    med = np.maximum(med, disc(x, y, 0.1, -0.3, 0.08 + 0.04 * f.mediastinal_widening, 0.07, 0.03))
    hg = frontal_heart(case, lungs)
    heart_w, hy = hg.width, hg.cy
    heart = disc(x, y, hg.cx, hy, hg.rx, hg.ry, soft)
    heart_core = smooth(1.0, 0.55, ellipse(x, y, hg.cx, hy, hg.rx, hg.ry)) * heart
    air *= 1.0 - np.maximum(med, 0.75 * heart + 0.25 * heart_core)
    att += 0.08 * heart_core

    # hila and vessels
    trees = []
    for side, lg in lungs.items():
        hy_h = -0.06 - (0.04 if side == "left" else 0.0)
        hx = lg.sign * 0.2
        att += (0.14 + 0.08 * f.edema) * fmath.exp(-(((x - hx) / 0.07) ** 2) - ((y - hy_h) / 0.12) ** 2)
        trees.append(vessel_tree(rng, (hx, hy_h), lg.sign))
    vessels = blur(cv.lines(*(np.concatenate(parts) for parts in zip(*trees, strict=True))), 0.6)
    if f.edema:
        vessels = blur(vessels, 0.6 / cv.px_unit * 0.01) * (1.3 + 0.4 * smooth(0.0, -0.5, y))

    # trachea and main bronchi (air)
    tr_x = 0.3 * spine_x
    trachea = smooth(0.042, 0.028, np.abs(x - tr_x)) * smooth(-0.3, -0.36, y)
    att -= 0.3 * trachea * smooth(-1.0, -0.85, y)

    # findings that change the lungs
    vessel_mask = np.zeros_like(x)
    for side, lg in lungs.items():
        xs = lg.sign * x
        m = side_mask[side]
        vm = m.copy()
        ptx = f.pneumothorax
        if ptx is not None and ptx.side == side:
            rx, ry = lg.rx * (1.0 - ptx.size), lg.ry * (1.0 - 0.45 * ptx.size)
            cx, cy = lg.cx - lg.rx * ptx.size * 0.75, lg.cy + (lg.ry - ry) * 0.6
            collapsed = disc(xs, y, cx, cy, rx, ry, soft)
            space = m * (1.0 - collapsed)
            e2 = ellipse(xs, y, cx, cy, rx, ry)
            line = fmath.exp(-((((e2 - 1.0) * min(rx, ry)) / (0.7 * soft)) ** 2)) * m
            vm = m * collapsed
            air -= air * 0.25 * collapsed * ptx.size
            att -= 0.12 * space
            att += 0.35 * line
        for eff in f.effusions:
            if eff.side != side:
                continue
            h = (0.13, 0.24, 0.40)[eff.grade - 1]
            t = np.clip((xs - 0.1) / (lg.cx + lg.rx - 0.1), 0.0, 1.0)
            # the meniscus climbs the lateral wall (t**3 as products: no CPU-dependent pow)
            level = lg.diaphragm - lg.dome * 0.5 - h - 1.2 * h * (t * t * t)
            fluid = smooth(level - 0.01, level + 0.07, y) * smooth(0.0, 0.04, xs)
            fluid *= smooth(1.08, 1.0, ellipse(xs, y, lg.cx, lg.cy, lg.rx, lg.ry))
            air *= 1.0 - fluid
            vm *= 1.0 - fluid
            att += 0.1 * fluid
        if f.pleural_thickening == side:
            e = ellipse(xs, y, lg.cx, lg.cy, lg.rx, lg.ry)
            rim = smooth(0.9, 0.96, e) * smooth(1.02, 0.99, e) * smooth(lg.diaphragm, lg.cy - lg.ry, y)
            rim = np.maximum(rim, disc(xs, y, lg.cx + 0.02, lg.cy - lg.ry + 0.03, 0.16, 0.05, 0.02) * m)
            air *= 1.0 - 0.8 * rim
            att += 0.12 * rim
        vessel_mask += vm
    att += 0.13 * vessels * np.clip(vessel_mask, 0.0, 1.0)

    for op in f.opacities:
        lg = lungs[op.side]
        xs = lg.sign * x
        border = (0.65 if op.side == "left" else 0.35) * heart_w  # lateral heart border (xs)
        cx, cy = opacity_centre(lg, op, heart_w)
        noise = np.clip(lowfreq(rng, cv.size, 7), -1.5, 1.5)
        e = ellipse(xs, y, cx, cy, op.extent * 1.3, op.extent)
        if op.kind == "consolidation":
            # lobar: bounded by a fissure-like margin, reaching the apex, heart border or diaphragm
            edge = 0.07 * noise
            if op.zone == "upper":
                dens = smooth(0.02, -0.04, y - (lg.cy - lg.ry + 2.2 * op.extent) + edge) * smooth(
                    0.0, 0.04, xs
                )
            elif op.zone == "lower":
                dens = smooth(-0.02, 0.04, y - (lg.diaphragm - lg.dome - 1.5 * op.extent) + edge)
                # the costophrenic angle stays sharp (unlike an effusion)
                dens *= smooth(0.05, 0.2, xs + edge) * smooth(
                    lg.cx + lg.rx * 0.7, lg.cx + lg.rx * 0.3, xs + edge
                )
            else:
                # against the heart border: the border is lost (silhouette sign)
                e_mid = ellipse(xs, y, border + 0.9 * op.extent, hy - 0.12, op.extent * 1.2, op.extent * 1.4)
                dens = smooth(1.1, 0.7, e_mid + 0.15 * noise)
            bronch = cv.lines(*vessel_tree(rng, (lg.sign * (cx - 0.08), cy - 0.05), lg.sign, 0.5)[:2])
            air *= 1.0 - 0.9 * dens
            att += 0.12 * dens - 0.2 * np.clip(bronch, 0.0, 1.0) * dens
        elif op.kind == "opacity":
            # ground glass: large, homogeneous, ill-defined
            e_gg = ellipse(xs, y, cx, cy, op.extent * 1.6, op.extent * 1.3)
            dens = smooth(1.1, 0.45, e_gg + 0.15 * noise)
            air *= 1.0 - 0.7 * dens
        else:
            fine = lowfreq(rng, cv.size, 28)
            # bronchopneumonia: discrete dense patches scattered over the zone
            dens = smooth(1.4, 0.9, e) * smooth(0.2, 0.55, fine + 0.3)
            air *= 1.0 - 0.95 * dens
            att += 0.08 * dens
    for les in f.lesions:
        lg = lungs[les.side]
        cx, cy = lesion_centre(lg, les)
        r = les.diameter_mm / 2.0 / MM_PER_UNIT
        xs = lg.sign * x
        theta = fmath.arctan2(y - cy, xs - cx)
        lobulation = 1.0 + (0.12 if les.is_mass else 0.04) * fmath.sin(5 * theta + les.depth * 6.0)
        e = ellipse(xs, y, cx, cy, r, r) / lobulation
        dens = smooth(1.0 + soft / r, 1.0 - 2.0 * soft / r, e)
        air *= 1.0 - 0.7 * dens
        att += 0.3 * dens
    if f.edema:
        for lg in lungs.values():
            xs = lg.sign * x
            haze = fmath.exp(-(((xs - 0.22) / 0.28) ** 2) - ((y + 0.02) / 0.38) ** 2)
            air *= 1.0 - (0.42 if f.edema == 1 else 0.65) * haze
        kerley = []
        for lg in lungs.values():
            lat = lg.cx + lg.rx
            for k in range(6):
                yy = lg.diaphragm - 0.08 - 0.035 * k
                kerley.append(np.array([[lg.sign * (lat - 0.1), yy], [lg.sign * (lat - 0.015), yy]]))
        att += 0.18 * cv.lines(kerley, [0.006] * len(kerley)) * np.clip(sum(side_mask.values()), 0, 1)
    for atl in f.atelectasis:
        lg = lungs[atl.side]
        y0 = lg.diaphragm - lg.dome - 0.06
        plates = [
            np.array([[lg.sign * 0.22, y0 - 0.02], [lg.sign * 0.62, y0 + 0.04]]),
            np.array([[lg.sign * 0.3, y0 - 0.1], [lg.sign * 0.58, y0 - 0.07]]),
        ]
        band = np.clip(cv.lines(plates, [0.04, 0.03]), 0.0, 1.0) * side_mask[atl.side]
        air *= 1.0 - 0.95 * band
        att += 0.15 * band

    att -= 0.78 * air

    # bones: spine, ribs, clavicles, scapulae
    dxs = np.abs(x - spine_x)
    phase = y / 0.09
    fr = phase - np.floor(phase)
    spine = smooth(0.09, 0.075, dxs) * (0.85 + 0.15 * fmath.cos(2 * math.pi * phase))
    pedicle = fmath.exp(-(((dxs - 0.055) / 0.014) ** 2) - ((fr - 0.35) / 0.14) ** 2)
    att += (0.2 * spine + 0.1 * pedicle) * smooth(-1.0, -0.9, y)
    for side, lg in lungs.items():
        xs = lg.sign * x
        lat = lg.cx + lg.rx * np.sqrt(np.clip(1.0 - ((y - lg.cy) / (lg.ry + 0.1)) ** 2, 0.0, 1.0)) + 0.04
        window = smooth(0.06, 0.12, xs) * smooth(lat + 0.03, lat - 0.02, xs)
        phi = (y + 0.25 * xs - 0.9 * xs**2 - (lg.cy - lg.ry - 0.08)) / a.rib_spacing
        fx = f.fracture
        if fx is not None and fx.side == side:
            xb, yb = fracture_point(case, lg, fx)
            near = fmath.exp(-(((phi - fx.rib - 0.2) / 0.6) ** 2))
            phi = phi - fx.displacement * near * smooth(xb - 0.004, xb + 0.004, xs)
        k = np.floor(phi)
        fr = phi - k
        band = smooth(0.0, 0.1, fr) * smooth(0.52, 0.42, fr)
        cortex = fmath.exp(-(((fr - 0.05) / 0.04) ** 2)) + fmath.exp(-(((fr - 0.47) / 0.04) ** 2))
        rib = (0.12 * band + 0.05 * cortex) * ((k >= 0) & (k < 11)) * window * smooth(0.75, 0.45, y)
        if fx is not None and fx.side == side:
            gap = fmath.exp(-(((xs - xb) / 0.018) ** 2)) * (np.abs(phi - fx.rib - 0.18) < 0.7)
            rib *= 1.0 - 0.9 * gap
            att += 0.3 * disc(xs, y, xb, yb, 0.045, 0.032, 0.012)  # callus around the break
        att += rib
        d = np.clip(lg.cx + lg.rx + 0.05 - xs, 0.0, None)
        phi_a = (y - 0.5 * d + 0.28 * d**2 - (lg.cy - lg.ry + 0.05)) / (a.rib_spacing * 1.3)
        fa = phi_a - np.floor(phi_a)
        band_a = smooth(0.0, 0.08, fa) * smooth(0.3, 0.22, fa) * (phi_a >= 0) * (phi_a < 6)
        att += 0.07 * band_a * window * smooth(0.2, 0.32, xs)
        t = (xs - 0.05) / 0.62
        yc = -0.64 - 0.13 * t + 0.025 * fmath.sin(2 * math.pi * t) - (0.07 if ap else 0.0)
        clav = smooth(0.032, 0.018, np.abs(y - yc)) * smooth(-0.02, 0.06, t) * smooth(1.05, 0.95, t)
        att += 0.35 * clav
        if ap:
            xline = 0.6 - 0.12 * (y + 0.62) / 0.55
            scap = smooth(xline - 0.01, xline + 0.01, xs) * smooth(-0.72, -0.6, y) * smooth(-0.02, -0.12, y)
            att += 0.1 * scap * window

    # devices (metal and plastic over everything)
    dev = f.devices
    if dev.sternotomy:
        wires = []
        for k in range(6):
            yy = -0.42 + 0.11 * k
            loop = np.array([[0.04 * math.cos(t), yy + 0.012 * math.sin(t)] for t in np.linspace(0, 6.3, 14)])
            wires += [loop, np.array([[0.0, yy], [0.015, yy + 0.03]])]
        att += 1.1 * np.clip(cv.lines(wires, [0.007] * len(wires)), 0.0, 1.5)
    tubes: list[np.ndarray] = []
    tube_w: list[float] = []
    if dev.pacemaker:
        gx = 0.55
        att += 2.0 * disc(x, y, gx, -0.56, 0.085, 0.06, soft)
        tubes += [
            bezier([(gx - 0.05, -0.55), (0.0, -0.7), (-0.05, -0.35), (-0.08, 0.05)]),
            bezier([(gx - 0.05, -0.53), (-0.02, -0.65), (-0.08, 0.05), (0.25, hy + 0.1)]),
        ]
        tube_w += [0.008, 0.008]
    if dev.central_line:
        tubes.append(bezier([(-0.22, -1.0), (-0.12, -0.75), (-0.06, -0.5), (-0.04, -0.15)]))
        tube_w.append(0.008)
    if dev.et_tube:
        for off in (-0.016, 0.016):
            tubes.append(np.array([[off, -1.0], [off, -0.45]]))
            tube_w.append(0.005)
    if tubes:
        att += 0.9 * np.clip(cv.lines(tubes, tube_w), 0.0, 1.5)
    return att
