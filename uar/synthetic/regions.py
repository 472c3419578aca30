"""Where each finding of a case is drawn, per view, in that view's pixel coordinates.

:func:`finding_regions` returns one :class:`~uar.synthetic.case.Region` per drawn finding of a
view (grounding targets: a box around the pixels the finding changes, its centre, side and zone).
The boxes come from the renderer's own geometry (:mod:`uar.synthetic.anatomy`: lungs, zones, the
heart, opacity, lesion and fracture centres; for the lateral view the same constants as
:mod:`uar.synthetic.lateral`), extended by the finding's soft edge, and are mapped through the
view's rotation, magnification and shift (:class:`uar.synthetic.raster.Canvas`).

Findings without a CheXpert observation (hyperinflation, scoliosis) have no region; neither do
findings a view does not show (pleural thickening and rib fractures on the lateral view).
"""

from __future__ import annotations

import math

import numpy as np

from uar.synthetic.anatomy import (
    MM_PER_UNIT,
    Lung,
    fracture_point,
    frontal_heart,
    lesion_centre,
    lung_geometry,
    opacity_centre,
    zone_y,
)
from uar.synthetic.case import Case, Laterality, Region, View, Zone
from uar.synthetic.raster import Canvas

# Anatomy-space extent: (x0, x1, y0, y1) in image x (not the lateral distance xs) and y.
_Extent = tuple[float, float, float, float]
_PAD_PX = 1.5  # detector blur and soft edges reach about this far beyond the drawn extent
OPACITY_OBSERVATION = {"consolidation": "Consolidation", "opacity": "Lung Opacity", "pneumonia": "Pneumonia"}


def _lateral_extent(lung: Lung, xs0: float, xs1: float, y0: float, y1: float) -> _Extent:
    """An extent given in a lung's lateral distance ``xs`` -> image x (the right lung is on the left)."""
    a, b = lung.sign * xs0, lung.sign * xs1
    return min(a, b), max(a, b), y0, y1


def _around(cx: float, cy: float, rx: float, ry: float) -> _Extent:
    return cx - rx, cx + rx, cy - ry, cy + ry


class _Builder:
    """Collects the regions of one view, mapping anatomy extents to clipped pixel boxes."""

    def __init__(self, case: Case, view: View, size: int) -> None:
        self.view, self.size = view, size
        self.canvas = Canvas.make(size, case.acquisition)
        self.regions: list[Region] = []

    def add(
        self,
        finding: str,
        observation: str,
        extent: _Extent,
        centre: tuple[float, float],
        side: Laterality | None = None,
        zone: Zone | None = None,
    ) -> None:
        x0, x1, y0, y1 = extent
        cols, rows = self.canvas.to_pixels(np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
        left = max(0, math.floor(float(cols.min()) - _PAD_PX))
        top = max(0, math.floor(float(rows.min()) - _PAD_PX))
        right = min(self.size, math.ceil(float(cols.max()) + _PAD_PX) + 1)
        bottom = min(self.size, math.ceil(float(rows.max()) + _PAD_PX) + 1)
        if right <= left or bottom <= top:  # entirely outside the image (never seen)
            return
        cx, cy = self.canvas.to_pixels(np.array([centre[0]]), np.array([centre[1]]))
        self.regions.append(
            Region(
                finding=finding,
                observation=observation,
                view=self.view,
                side=side,
                zone=zone,
                centre=(float(cx[0]), float(cy[0])),
                box=(left, top, right, bottom),
                image_size=self.size,
            )
        )


def _frontal(case: Case, out: _Builder) -> None:
    f = case.findings
    lungs = lung_geometry(case)
    heart = frontal_heart(case, lungs)

    def lung_box(lung: Lung) -> _Extent:
        return _lateral_extent(lung, 0.0, lung.cx + lung.rx + 0.02, lung.cy - lung.ry - 0.02, lung.diaphragm)

    if f.cardiomegaly:
        out.add(
            "cardiomegaly",
            "Cardiomegaly",
            _around(heart.cx, heart.cy, heart.rx, heart.ry),
            (heart.cx, heart.cy),
        )
    if f.mediastinal_widening:
        top = case.anatomy.apex_y - 0.06
        out.add(
            "mediastinal widening",
            "Enlarged Cardiomediastinum",
            (-0.25, 0.25, top, 0.12),
            (0.0, (top + 0.1) / 2),
        )
    for eff in f.effusions:
        lung = lungs[eff.side]
        h = (0.13, 0.24, 0.40)[eff.grade - 1]
        top = lung.diaphragm - lung.dome * 0.5 - 2.2 * h - 0.02  # the meniscus at the lateral wall
        bottom = lung.diaphragm + 0.1
        ext = _lateral_extent(lung, 0.0, lung.cx + 1.08 * lung.rx, top, bottom)
        centre = (lung.sign * (lung.cx + 0.5 * lung.rx), (top + lung.diaphragm) / 2)
        out.add("effusion", "Pleural Effusion", ext, centre, eff.side, "lower")
    if f.pneumothorax is not None:
        lung = lungs[f.pneumothorax.side]
        out.add(
            "pneumothorax",
            "Pneumothorax",
            lung_box(lung),
            (lung.sign * lung.cx, lung.cy - 0.3 * lung.ry),
            f.pneumothorax.side,
        )
    for op in f.opacities:
        lung = lungs[op.side]
        cx, cy = opacity_centre(lung, op, heart.width)
        r = op.extent
        if op.kind == "consolidation" and op.zone == "upper":  # lobar, from the apex down
            ext = _lateral_extent(
                lung, 0.0, lung.cx + lung.rx, lung.cy - lung.ry, lung.cy - lung.ry + 2.2 * r + 0.1
            )
        elif op.kind == "consolidation" and op.zone == "lower":  # lobar, down to the diaphragm
            ext = _lateral_extent(
                lung,
                0.0,
                lung.cx + 0.7 * lung.rx + 0.1,
                lung.diaphragm - lung.dome - 1.5 * r - 0.1,
                lung.diaphragm,
            )
        elif op.kind == "consolidation":  # against the heart border
            border = (0.65 if op.side == "left" else 0.35) * heart.width
            mx, my = border + 0.9 * r, heart.cy - 0.12
            ext = _lateral_extent(
                lung, mx - 1.2 * 1.3 * r, mx + 1.2 * 1.3 * r, my - 1.4 * 1.3 * r, my + 1.4 * 1.3 * r
            )
            cx, cy = mx, my
        elif op.kind == "opacity":  # ground glass, larger and ill-defined
            ext = _lateral_extent(
                lung, cx - 1.6 * 1.25 * r, cx + 1.6 * 1.25 * r, cy - 1.3 * 1.25 * r, cy + 1.3 * 1.25 * r
            )
        else:  # bronchopneumonia patches over the zone
            ext = _lateral_extent(
                lung, cx - 1.3 * 1.45 * r, cx + 1.3 * 1.45 * r, cy - 1.45 * r, cy + 1.45 * r
            )
        ext = (ext[0], ext[1], max(ext[2], lung.cy - lung.ry - 0.02), min(ext[3], lung.diaphragm))
        out.add(op.kind, OPACITY_OBSERVATION[op.kind], ext, (lung.sign * cx, cy), op.side, op.zone)
    for les in f.lesions:
        lung = lungs[les.side]
        cx, cy = lesion_centre(lung, les)
        r = les.diameter_mm / 2.0 / MM_PER_UNIT * (1.12 if les.is_mass else 1.04)
        ext = _lateral_extent(lung, cx - r, cx + r, cy - r, cy + r)
        out.add(
            "mass" if les.is_mass else "nodule", "Lung Lesion", ext, (lung.sign * cx, cy), les.side, les.zone
        )
    if f.edema:  # perihilar haze, Kerley lines at both bases: both lungs
        right, left = lungs["right"], lungs["left"]
        top = min(right.cy - right.ry, left.cy - left.ry)
        ext = (-(right.cx + right.rx), left.cx + left.rx, top, max(right.diaphragm, left.diaphragm))
        out.add("edema", "Edema", ext, (0.0, -0.02), "both")
    for atl in f.atelectasis:  # plate-like bands and the elevated hemidiaphragm
        lung = lungs[atl.side]
        y0 = lung.diaphragm - lung.dome - 0.06
        ext = _lateral_extent(lung, 0.0, lung.cx + lung.rx + 0.02, y0 - 0.14, lung.diaphragm + 0.09)
        out.add("atelectasis", "Atelectasis", ext, (lung.sign * 0.42, y0 - 0.03), atl.side, atl.zone)
    if f.pleural_thickening is not None:
        lung = lungs[f.pleural_thickening]
        ext = _lateral_extent(
            lung, lung.cx - 0.2, lung.cx + 1.04 * lung.rx, lung.cy - lung.ry - 0.04, lung.diaphragm
        )
        out.add(
            "pleural thickening",
            "Pleural Other",
            ext,
            (lung.sign * (lung.cx + 0.8 * lung.rx), lung.cy - 0.3 * lung.ry),
            f.pleural_thickening,
        )
    if f.fracture is not None:  # the break, and the ribs lateral of it that step with it
        fx = f.fracture
        lung = lungs[fx.side]
        xb, yb = fracture_point(case, lung, fx)
        lat = lung.cx + lung.rx + 0.06
        y_lat = yb - 0.25 * (lat - xb) + 0.9 * (lat**2 - xb**2)  # the same rib at the lateral wall
        reach = (1.3 + fx.displacement) * case.anatomy.rib_spacing
        ext = _lateral_extent(lung, xb - 0.06, lat, min(yb, y_lat) - reach, max(yb, y_lat) + reach)
        out.add("rib fracture", "Fracture", ext, (lung.sign * xb, yb), fx.side)
    dev = f.devices
    if dev.pacemaker:
        out.add("pacemaker", "Support Devices", (-0.14, 0.66, -0.74, heart.cy + 0.14), (0.55, -0.56), "left")
    if dev.central_line:
        out.add("central line", "Support Devices", (-0.25, -0.02, -1.0, -0.13), (-0.06, -0.5), "right")
    if dev.et_tube:
        out.add("endotracheal tube", "Support Devices", (-0.03, 0.03, -1.0, -0.44), (0.0, -0.45))
    if dev.sternotomy:
        out.add("sternotomy wires", "Support Devices", (-0.06, 0.06, -0.45, 0.16), (0.0, -0.15))


def _lateral(case: Case, out: _Builder) -> None:
    a, f = case.anatomy, case.findings
    depth = 1.08 if f.hyperinflation else 1.0
    dia = a.diaphragm_y + (0.12 if f.hyperinflation else 0.0) - 0.05 * bool(f.atelectasis)
    cx, cy, rx, ry = 0.02, dia - 0.05, 0.55 * depth, dia - 0.05 - a.apex_y  # both lungs superimposed
    lung_ext = (cx - rx, cx + rx, cy - ry, dia + 0.12)
    if f.cardiomegaly:
        hs = f.ctr / 0.46
        hx, hy = -0.22 - 0.03 * (hs - 1), dia - 0.2
        out.add("cardiomegaly", "Cardiomegaly", _around(hx, hy, 0.27 * hs, 0.3 * min(hs, 1.3)), (hx, hy))
    if f.mediastinal_widening:
        out.add(
            "mediastinal widening",
            "Enlarged Cardiomediastinum",
            _around(-0.3, -0.35, 0.2, 0.22),
            (-0.3, -0.35),
        )
    if f.effusions:  # one fluid level over both lungs, from the posterior sulcus
        h = (0.1, 0.2, 0.33)[max(e.grade for e in f.effusions) - 1] * (1.2 if len(f.effusions) == 2 else 1.0)
        top = dia + 0.12 - 2.2 * h - 0.02
        side: Laterality = f.effusion_laterality or "both"
        out.add(
            "effusion",
            "Pleural Effusion",
            (cx - rx, cx + 1.06 * rx, top, dia + 0.12),
            (0.3, (top + dia) / 2),
            side,
            "lower",
        )
    if f.pneumothorax is not None:
        y = a.apex_y + 0.12
        out.add("pneumothorax", "Pneumothorax", _around(0.0, y, 0.35, 0.17), (0.0, y), f.pneumothorax.side)
    centres = {"upper": (0.15, -0.45), "middle": (-0.25, 0.0), "lower": (0.35, dia - 0.15)}
    for op in f.opacities:
        ox, oy = centres[op.zone]
        grow = 1.45 if op.kind == "pneumonia" else 1.3
        ext = _around(ox, oy, op.extent * 1.2 * grow, op.extent * grow)
        ext = (
            max(ext[0], lung_ext[0]),
            min(ext[1], lung_ext[1]),
            max(ext[2], lung_ext[2]),
            min(ext[3], lung_ext[3]),
        )
        out.add(op.kind, OPACITY_OBSERVATION[op.kind], ext, (ox, oy), op.side, op.zone)
    lungs = lung_geometry(case)
    for les in f.lesions:
        r = les.diameter_mm / 2.0 / MM_PER_UNIT
        ly, lx = zone_y(lungs[les.side], les.zone, les.y), -0.4 + les.depth * 0.8
        out.add(
            "mass" if les.is_mass else "nodule",
            "Lung Lesion",
            _around(lx, ly, r, r),
            (lx, ly),
            les.side,
            les.zone,
        )
    if f.edema:
        out.add("edema", "Edema", (cx - rx, cx + rx, cy - ry, dia + 0.12), (0.0, -0.05), "both")
    for atl in f.atelectasis:  # an oblique band, and the higher dome under both lungs
        y0 = dia - 0.05
        out.add(
            "atelectasis",
            "Atelectasis",
            (cx - rx, cx + rx, y0 - 0.16, dia + 0.2),
            (0.22, y0 - 0.05),
            atl.side,
            atl.zone,
        )
    dev = f.devices
    front_x = -0.6 * depth
    if dev.pacemaker:
        out.add(
            "pacemaker",
            "Support Devices",
            (front_x - 0.03, -0.02, -0.68, dia - 0.08),
            (front_x + 0.02, -0.58),
            "left",
        )
    if dev.central_line:
        out.add("central line", "Support Devices", (-0.15, -0.02, -1.0, -0.16), (-0.09, -0.5), "right")
    if dev.et_tube:
        out.add("endotracheal tube", "Support Devices", (-0.08, 0.04, -1.0, -0.38), (0.02, -0.4))
    if dev.sternotomy:
        out.add(
            "sternotomy wires",
            "Support Devices",
            (front_x - 0.03, front_x + 0.03, -0.47, 0.13),
            (front_x, -0.17),
        )


def finding_regions(case: Case, view: View, *, size: int = 256) -> tuple[Region, ...]:
    """Each drawn finding's region on ``view`` of ``case`` rendered at ``size`` pixels.

    The regions refer to ``render(case, view, size=size)`` (same rotation, scale and shift). Order:
    heart and mediastinum, pleura and lungs, bones, devices; one region per device and per
    finding of each side (a bilateral effusion gives two on the frontal view, one on the lateral).
    """
    if view not in ("frontal", "lateral"):
        raise ValueError(f"view must be 'frontal' or 'lateral', got {view!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    out = _Builder(case, view, size)
    (_frontal if view == "frontal" else _lateral)(case, out)
    return tuple(out.regions)
