"""Small numpy image tools of the renderer: smoothstep, blur, noise fields, soft shapes, a canvas.

:class:`Canvas` is the anatomy-coordinate grid of one rendering (rotation, magnification and shift
of the case's acquisition) with the anatomy -> pixel mapping of points and soft-line rasterising.
All maps are float32 ``(H, W)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from uar.synthetic.case import Acquisition


def smooth(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Smoothstep from 0 at ``e0`` to 1 at ``e1`` (either order)."""
    t = (x - e0) * np.float32(1.0 / (e1 - e0))
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (3.0 - 2.0 * t)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding; ``sigma`` in pixels. (H, W) -> (H, W)."""
    if sigma <= 0.05:
        return img
    k = _gauss_kernel(sigma)
    r = len(k) // 2
    h, w = img.shape
    p = np.pad(img, ((0, 0), (r, r)), mode="edge")
    out = np.zeros_like(img)
    for i, kv in enumerate(k):
        out += kv * p[:, i : i + w]
    p = np.pad(out, ((r, r), (0, 0)), mode="edge")
    out = np.zeros_like(img)
    for i, kv in enumerate(k):
        out += kv * p[i : i + h, :]
    return out


def lowfreq(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field (size, size), about zero mean and unit scale: bilinear upsampling of a
    coarse ``cells`` x ``cells`` grid."""
    g = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0.0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(np.int32), cells - 1)
    f = t - i
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def splat(size: int, px: np.ndarray, py: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Accumulate weighted points (pixel coordinates) into a (size, size) map, bilinearly."""
    x0 = np.floor(px).astype(np.int64)
    y0 = np.floor(py).astype(np.int64)
    fx = (px - x0).astype(np.float32)
    fy = (py - y0).astype(np.float32)
    out = np.zeros(size * size, dtype=np.float64)
    for dx, dy, ww in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xx, yy = x0 + dx, y0 + dy
        ok = (xx >= 0) & (xx < size) & (yy >= 0) & (yy < size)
        out += np.bincount((yy * size + xx)[ok], weights=(w * ww)[ok], minlength=size * size)
    return out.reshape(size, size).astype(np.float32)


@dataclass
class Canvas:
    """Anatomy-coordinate grid of one rendering and the anatomy -> pixel mapping of points."""

    size: int
    x: np.ndarray  # (H, W) anatomy x of each pixel
    y: np.ndarray  # (H, W) anatomy y of each pixel
    px_unit: float  # anatomy units per pixel
    rot: np.ndarray  # (2, 2) anatomy -> image rotation
    scale: float
    shift: tuple[float, float]

    @classmethod
    def make(cls, size: int, acq: Acquisition) -> Canvas:
        """The ``size`` x ``size`` grid of one view under the acquisition's rotation, scale and shift."""
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        iy, ix = np.meshgrid(c, c, indexing="ij")
        th = math.radians(acq.rotation_deg)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=np.float32)
        dx, dy = ix - acq.shift[0], iy - acq.shift[1]
        # inverse rotation and scale: image -> anatomy
        ax = (rot[0, 0] * dx + rot[1, 0] * dy) / acq.scale
        ay = (rot[0, 1] * dx + rot[1, 1] * dy) / acq.scale
        return cls(size, ax, ay, 2.0 / size / acq.scale, rot, acq.scale, acq.shift)

    def to_pixels(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy points -> pixel coordinates (column, row)."""
        ix = self.scale * (self.rot[0, 0] * x + self.rot[0, 1] * y) + self.shift[0]
        iy = self.scale * (self.rot[1, 0] * x + self.rot[1, 1] * y) + self.shift[1]
        return (ix + 1.0) * self.size / 2.0 - 0.5, (iy + 1.0) * self.size / 2.0 - 0.5

    def lines(
        self,
        polylines: np.ndarray | list[np.ndarray],
        widths: np.ndarray | list[float],
        values: np.ndarray | list[float] | None = None,
    ) -> np.ndarray:
        """Rasterise anatomy polylines as soft lines of the given widths (anatomy units).

        ``polylines``: an (M, K, 2) array or a list of (K_i, 2) arrays. Returns a (H, W) map whose
        value on a line is about its ``values`` entry (default 1).
        """
        w_all = np.asarray(widths, dtype=np.float64)
        v_all = np.ones(len(w_all)) if values is None else np.asarray(values, dtype=np.float64)
        if isinstance(polylines, np.ndarray):
            batches = [(polylines, np.arange(len(polylines)))]
        else:
            by_len: dict[int, list[int]] = {}
            for i, pl in enumerate(polylines):
                by_len.setdefault(len(pl), []).append(i)
            batches = [(np.stack([polylines[i] for i in idx]), np.array(idx)) for idx in by_len.values()]
        step = self.px_unit * 0.5
        sigmas = np.maximum(0.5, np.round(2.0 * w_all / self.px_unit / 2.5) / 2.0)  # (M,) pixels
        groups: dict[float, list[tuple[np.ndarray, np.ndarray]]] = {}
        for poly, idx in batches:
            seg = np.diff(poly, axis=1)  # (B, K-1, 2)
            seg_len = np.hypot(seg[..., 0], seg[..., 1])  # (B, K-1)
            n = max(1, int(math.ceil(float(seg_len.max()) / step)))
            t = np.arange(n) / n
            pts = poly[:, :-1, None, :] + seg[:, :, None, :] * t[None, None, :, None]  # (B, K-1, n, 2)
            wts = np.broadcast_to(
                (seg_len / n / self.px_unit)[..., None] * v_all[idx, None, None], pts.shape[:3]
            )
            for sigma in np.unique(sigmas[idx]):
                sel = sigmas[idx] == sigma
                groups.setdefault(float(sigma), []).append((pts[sel].reshape(-1, 2), wts[sel].ravel()))
        out = np.zeros((self.size, self.size), dtype=np.float32)
        for sigma, items in groups.items():
            p = np.concatenate([a for a, _ in items])
            cx, cy = self.to_pixels(p[:, 0], p[:, 1])
            m = splat(self.size, cx, cy, np.concatenate([b for _, b in items]))
            out += blur(m, sigma) * (sigma * 2.5066)
        return out


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipse."""
    return np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)


def disc(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, soft: float) -> np.ndarray:
    """Soft-edged filled ellipse (1 inside); ``soft`` = edge width in anatomy units."""
    r = ellipse(x, y, cx, cy, rx, ry)
    return smooth(1.0 + soft / min(rx, ry), 1.0 - soft / min(rx, ry), r)


def bezier(p: list[tuple[float, float]], n: int = 40) -> np.ndarray:
    """Points of the Bezier curve with control points ``p`` (de Casteljau), (n, 2)."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]  # (n, 1, 1)
    cur = np.repeat(np.array(p, dtype=np.float64)[None], n, axis=0)  # (n, k, 2)
    while cur.shape[1] > 1:
        cur = cur[:, :-1] * (1 - t) + cur[:, 1:] * t
    return cur[:, 0]
