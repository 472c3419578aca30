"""Synthetic chest radiographs with known findings (numpy only).

A :class:`Case` holds a patient's anatomy, the acquisition settings, the findings with their
parameters and the report style (which absent findings the report states as absent); from it
:attr:`Case.labels` gives the 14 CheXpert observations (1 / 0 / None). :func:`render` draws the
frontal (PA or AP) or lateral view of a case analytically: an attenuation map is built from the
body, lungs, mediastinum, bones, vessels, findings and devices in *anatomy coordinates*
(x right on the image, y down, both in [-1, 1]), then exposed, rotated, scaled, collimated and
noised. Output is float32 ``(size, size)`` in [0, 1], display polarity (air dark).

Everything is deterministic: a case comes from ``sample_case(np.random.default_rng(seed))`` and
``render(case, view)`` draws its noise and vessels from ``case.seed`` and the view, so the same
seed always gives the same pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from uar.eval.labeler import OBSERVATIONS

Side = Literal["right", "left"]  # patient side; the patient's right is on the image left (PA)
Laterality = Literal["right", "left", "both"]
Zone = Literal["upper", "middle", "lower"]
View = Literal["frontal", "lateral"]
OpacityKind = Literal["consolidation", "opacity", "pneumonia"]

# Observations a report may state as absent (normal statements); sampled per case.
NEGATABLE: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Pneumothorax",
    "Pleural Effusion",
    "Fracture",
)
CARDIOMEGALY_CTR = 0.56  # cardiothoracic ratio from which the heart is called enlarged


# --------------------------------------------------------------------------------------------
# Case description
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anatomy:
    """Patient build, in anatomy units (image half-width = 1)."""

    sex: Literal["F", "M"]
    age: int  # years
    body_width: float  # half-width of the trunk, 0.80-0.98
    lung_width: float  # lateral extent of each lung from the midline, 0.70-0.82
    apex_y: float  # top of the lung apices, about -0.78
    diaphragm_y: float  # height of the right costophrenic angle, about 0.42
    rib_spacing: float  # vertical distance between posterior ribs, about 0.105
    tissue: float  # soft-tissue attenuation scale (habitus), 0.85-1.2


@dataclass(frozen=True)
class Acquisition:
    """How the radiograph was taken and stored (shared by both views of a study)."""

    projection: Literal["PA", "AP"]
    modality: Literal["CR", "DX"]
    exposure: float  # attenuation-to-display gain, 0.85-1.25
    gamma: float  # display gamma, 0.85-1.15
    noise: float  # quantum noise standard deviation at full signal, 0.005-0.03
    rotation_deg: float  # in-plane rotation, degrees
    scale: float  # magnification, 0.86-1.04
    shift: tuple[float, float]  # (dx, dy) in image half-widths
    collimation: tuple[float, float, float, float]  # left, top, right, bottom edges in [-1, 1]
    collimation_white: bool  # unexposed border shown white (True) or blanked black
    photometric: Literal["MONOCHROME1", "MONOCHROME2"]
    bits_stored: int  # 10-16


@dataclass(frozen=True)
class Effusion:
    """Pleural effusion of one side; grade 1 small, 2 moderate, 3 large."""

    side: Side
    grade: int


@dataclass(frozen=True)
class Pneumothorax:
    """Pneumothorax of one side; ``size`` = fraction of the hemithorax width that is air (0.15-0.45)."""

    side: Side
    size: float


@dataclass(frozen=True)
class AirspaceOpacity:
    """Airspace disease in one zone: dense lobar consolidation, hazy opacity or patchy pneumonia."""

    kind: OpacityKind
    side: Side
    zone: Zone
    extent: float  # radius in anatomy units, 0.12-0.24


@dataclass(frozen=True)
class Lesion:
    """A nodule (< 3 cm) or a mass, at (x, y) inside one lung (fractions of the lung box)."""

    side: Side
    zone: Zone
    x: float  # 0 medial .. 1 lateral
    y: float  # within the zone, 0 top .. 1 bottom
    depth: float  # 0 anterior .. 1 posterior (lateral view)
    diameter_mm: float

    @property
    def is_mass(self) -> bool:
        """A lesion of 30 mm or more is a mass."""
        return self.diameter_mm >= 30.0


@dataclass(frozen=True)
class Atelectasis:
    """Plate-like (subsegmental) atelectasis at one lung base, with some volume loss."""

    side: Side
    zone: Zone


@dataclass(frozen=True)
class RibFracture:
    """Fracture of a posterior rib (0 = first visible rib), displaced by ``displacement`` rib spacings."""

    side: Side
    rib: int
    position: float  # 0 medial .. 1 lateral along the rib
    displacement: float  # step at the break, in rib spacings; a callus surrounds the break


@dataclass(frozen=True)
class Devices:
    """Support devices."""

    pacemaker: bool = False
    central_line: bool = False
    et_tube: bool = False
    sternotomy: bool = False

    @property
    def any(self) -> bool:
        """Whether any device is present."""
        return self.pacemaker or self.central_line or self.et_tube or self.sternotomy


@dataclass(frozen=True)
class Findings:
    """Everything abnormal (or merely notable) in a case."""

    ctr: float = 0.46  # cardiothoracic ratio
    mediastinal_widening: bool = False
    effusions: tuple[Effusion, ...] = ()
    pneumothorax: Pneumothorax | None = None
    opacities: tuple[AirspaceOpacity, ...] = ()
    lesions: tuple[Lesion, ...] = ()
    edema: int = 0  # 0 none, 1 interstitial, 2 alveolar
    atelectasis: tuple[Atelectasis, ...] = ()
    pleural_thickening: Side | None = None
    fracture: RibFracture | None = None
    devices: Devices = field(default_factory=Devices)
    hyperinflation: bool = False  # no CheXpert observation; reported as a plain statement
    scoliosis: float = 0.0  # lateral spine deviation (anatomy units); no CheXpert observation

    @property
    def cardiomegaly(self) -> bool:
        """Cardiothoracic ratio at or above :data:`CARDIOMEGALY_CTR`."""
        return self.ctr >= CARDIOMEGALY_CTR

    @property
    def effusion_laterality(self) -> Laterality | None:
        """ "right", "left", "both" or None."""
        sides = {e.side for e in self.effusions}
        if not sides:
            return None
        return "both" if len(sides) == 2 else next(iter(sides))


@dataclass(frozen=True)
class Case:
    """One synthetic study: anatomy, acquisition, findings and the report's stated negatives."""

    seed: int
    anatomy: Anatomy
    acquisition: Acquisition
    findings: Findings
    negatives: tuple[str, ...] = ()  # observations the report states as absent

    @property
    def labels(self) -> dict[str, int | None]:
        """Ground truth for the 14 CheXpert observations: 1 present, 0 stated absent, None unmentioned.

        "No Finding" is 1 when no observation other than Support Devices is positive (CheXpert rule).
        """
        f = self.findings
        kinds = {o.kind for o in f.opacities}
        positive = {
            "Enlarged Cardiomediastinum": f.mediastinal_widening,
            "Cardiomegaly": f.cardiomegaly,
            "Lung Opacity": "opacity" in kinds,
            "Lung Lesion": bool(f.lesions),
            "Edema": f.edema > 0,
            "Consolidation": "consolidation" in kinds,
            "Pneumonia": "pneumonia" in kinds,
            "Atelectasis": bool(f.atelectasis),
            "Pneumothorax": f.pneumothorax is not None,
            "Pleural Effusion": bool(f.effusions),
            "Pleural Other": f.pleural_thickening is not None,
            "Fracture": f.fracture is not None,
            "Support Devices": f.devices.any,
        }
        labels: dict[str, int | None] = dict.fromkeys(OBSERVATIONS)
        for name, present in positive.items():
            if present:
                labels[name] = 1
            elif name in self.negatives:
                labels[name] = 0
        if not any(v == 1 for k, v in positive.items() if k != "Support Devices" and v):
            labels["No Finding"] = 1
        return labels

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (dataclasses as dicts, tuples as lists)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Sampling: the prevalence design
# --------------------------------------------------------------------------------------------
P_NORMAL = 0.31
# Relative weights of the finding types in abnormal cases (1-3 types per case, without replacement).
FINDING_WEIGHTS: dict[str, float] = {
    "cardiomegaly": 0.19,
    "effusion": 0.19,
    "devices": 0.15,
    "opacity": 0.11,
    "lesion": 0.12,
    "atelectasis": 0.11,
    "pneumothorax": 0.09,
    "consolidation": 0.09,
    "edema": 0.09,
    "fracture": 0.04,
    "pneumonia": 0.05,
    "widening": 0.05,
    "thickening": 0.04,
}
N_FINDINGS_P = (0.55, 0.30, 0.15)  # probability of 1, 2, 3 finding types in an abnormal case


def _side(rng: np.random.Generator) -> Side:
    return "right" if rng.random() < 0.5 else "left"


def _sample_anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        sex="F" if rng.random() < 0.5 else "M",
        age=int(rng.integers(18, 90)),
        body_width=float(rng.uniform(0.80, 0.97)),
        lung_width=float(rng.uniform(0.70, 0.80)),
        apex_y=float(rng.uniform(-0.80, -0.74)),
        diaphragm_y=float(rng.uniform(0.36, 0.46)),
        rib_spacing=float(rng.uniform(0.098, 0.112)),
        tissue=float(rng.uniform(0.85, 1.2)),
    )


def _sample_acquisition(rng: np.random.Generator, supine: bool) -> Acquisition:
    projection: Literal["PA", "AP"] = "AP" if supine or rng.random() < 0.2 else "PA"
    collimate = rng.random() < 0.5
    edges = (
        (
            float(rng.uniform(-1.0, -0.9)),
            float(rng.uniform(-1.0, -0.9)),
            float(rng.uniform(0.9, 1.0)),
            float(rng.uniform(0.88, 1.0)),
        )
        if collimate
        else (-1.0, -1.0, 1.0, 1.0)
    )
    return Acquisition(
        projection=projection,
        modality="DX" if rng.random() < 0.5 else "CR",
        exposure=float(rng.uniform(0.85, 1.25)),
        gamma=float(rng.uniform(0.85, 1.15)),
        noise=float(rng.uniform(0.005, 0.025)),
        rotation_deg=float(rng.normal(0.0, 2.5)),
        scale=float(rng.uniform(0.88, 1.03)),
        shift=(float(rng.normal(0.0, 0.025)), float(rng.normal(0.02, 0.025))),
        collimation=edges,
        collimation_white=bool(rng.random() < 0.5),
        photometric="MONOCHROME1" if rng.random() < 0.45 else "MONOCHROME2",
        bits_stored=int(rng.choice([10, 12, 12, 14, 15, 16])),
    )


def _zone(rng: np.random.Generator, p: tuple[float, float, float] = (0.25, 0.3, 0.45)) -> Zone:
    return ("upper", "middle", "lower")[int(rng.choice(3, p=p))]


def _sample_findings(rng: np.random.Generator, types: set[str]) -> Findings:
    kw: dict[str, Any] = {}
    kw["ctr"] = float(rng.uniform(0.40, 0.51))
    if "cardiomegaly" in types:
        kw["ctr"] = float(rng.uniform(0.58, 0.70))
    kw["mediastinal_widening"] = "widening" in types
    if "effusion" in types:
        lat = rng.choice(3, p=(0.4, 0.3, 0.3))
        sides: tuple[Side, ...] = (("right",), ("left",), ("right", "left"))[int(lat)]
        grade = int(rng.choice([1, 2, 3], p=(0.45, 0.35, 0.2)))
        kw["effusions"] = tuple(Effusion(s, grade) for s in sides)
    if "pneumothorax" in types:
        kw["pneumothorax"] = Pneumothorax(_side(rng), float(rng.uniform(0.18, 0.45)))
    opacities = []
    for kind in ("consolidation", "opacity", "pneumonia"):
        if kind in types:
            zone = "lower" if kind == "pneumonia" else _zone(rng)
            opacities.append(AirspaceOpacity(kind, _side(rng), zone, float(rng.uniform(0.13, 0.22))))
    kw["opacities"] = tuple(opacities)
    if "lesion" in types:
        mass = rng.random() < 0.35
        kw["lesions"] = (
            Lesion(
                side=_side(rng),
                zone=_zone(rng, (0.4, 0.35, 0.25)),
                x=float(rng.uniform(0.3, 0.75)),
                y=float(rng.uniform(0.25, 0.75)),
                depth=float(rng.uniform(0.2, 0.8)),
                diameter_mm=float(rng.uniform(35, 70) if mass else rng.uniform(18, 28)),
            ),
        )
    if "edema" in types:
        kw["edema"] = int(rng.choice([1, 2], p=(0.45, 0.55)))
    if "atelectasis" in types:
        kw["atelectasis"] = (Atelectasis(_side(rng), "lower"),)
    if "thickening" in types:
        kw["pleural_thickening"] = _side(rng)
    if "fracture" in types:
        kw["fracture"] = RibFracture(
            side=_side(rng),
            rib=int(rng.integers(3, 8)),
            position=float(rng.uniform(0.55, 0.85)),
            displacement=float(rng.uniform(0.35, 0.6)),
        )
    if "devices" in types:
        flags = rng.random(4) < (0.45, 0.45, 0.3, 0.35)
        if not flags.any():
            flags[int(rng.integers(4))] = True
        kw["devices"] = Devices(*(bool(b) for b in flags))
    kw["hyperinflation"] = bool(rng.random() < 0.08) and "edema" not in types
    kw["scoliosis"] = float(rng.choice([-1, 1]) * rng.uniform(0.05, 0.1)) if rng.random() < 0.07 else 0.0
    return Findings(**kw)


def _sample_negatives(rng: np.random.Generator, labels_pos: set[str]) -> tuple[str, ...]:
    """Which absent observations the report states as absent (a radiologist's usual normal lines)."""
    p = {
        "Cardiomegaly": 0.92,
        "Enlarged Cardiomediastinum": 0.45,
        "Pneumothorax": 0.85,
        "Pleural Effusion": 0.88,
        "Lung Opacity": 0.45,
        "Consolidation": 0.35,
        "Pneumonia": 0.15,
        "Edema": 0.25,
        "Fracture": 0.2,
        "Lung Lesion": 0.1,
    }
    draws = rng.random(len(NEGATABLE))
    return tuple(
        name for name, u in zip(NEGATABLE, draws, strict=True) if name not in labels_pos and u < p[name]
    )


def sample_case(rng: np.random.Generator, *, seed: int | None = None) -> Case:
    """Draw one case from the prevalence design.

    31 % of cases are normal; the others have 1-3 finding types drawn from :data:`FINDING_WEIGHTS`
    (cardiomegaly and effusion ~15 %, devices ~12 %, lesion, opacity, atelectasis ~9 %, ...).
    ``seed`` (default: drawn from ``rng``) seeds the rendering noise of the case.
    """
    case_seed = int(rng.integers(0, 2**31 - 1)) if seed is None else seed
    anatomy = _sample_anatomy(rng)
    types: set[str] = set()
    if rng.random() >= P_NORMAL:
        names = list(FINDING_WEIGHTS)
        w = np.array([FINDING_WEIGHTS[n] for n in names])
        k = int(rng.choice(3, p=N_FINDINGS_P)) + 1
        types = {names[i] for i in rng.choice(len(names), size=k, replace=False, p=w / w.sum())}
        if "edema" in types and rng.random() < 0.5:
            types.add("cardiomegaly")
    findings = _sample_findings(rng, types)
    supine = findings.devices.et_tube or (findings.devices.central_line and rng.random() < 0.5)
    acquisition = _sample_acquisition(rng, supine)
    probe = Case(case_seed, anatomy, acquisition, findings, ())
    positives = {k for k, v in probe.labels.items() if v == 1}
    return Case(case_seed, anatomy, acquisition, findings, _sample_negatives(rng, positives))


# --------------------------------------------------------------------------------------------
# Small numpy image tools
# --------------------------------------------------------------------------------------------
def _smooth(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
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


def _lowfreq(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field, about zero mean and unit scale: bilinear upsampling of a coarse grid."""
    g = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0.0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(np.int32), cells - 1)
    f = t - i
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _splat(size: int, px: np.ndarray, py: np.ndarray, w: np.ndarray) -> np.ndarray:
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
class _Canvas:
    """Anatomy-coordinate grid of one rendering and the anatomy -> pixel mapping of points."""

    size: int
    x: np.ndarray  # (H, W) anatomy x of each pixel
    y: np.ndarray  # (H, W) anatomy y of each pixel
    px_unit: float  # anatomy units per pixel
    rot: np.ndarray  # (2, 2) anatomy -> image rotation
    scale: float
    shift: tuple[float, float]

    @classmethod
    def make(cls, size: int, acq: Acquisition) -> _Canvas:
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
            m = _splat(self.size, cx, cy, np.concatenate([b for _, b in items]))
            out += blur(m, sigma) * (sigma * 2.5066)
        return out


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipse."""
    return np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)


def _disc(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, soft: float
) -> np.ndarray:
    """Soft-edged filled ellipse (1 inside); ``soft`` = edge width in anatomy units."""
    r = _ellipse(x, y, cx, cy, rx, ry)
    return _smooth(1.0 + soft / min(rx, ry), 1.0 - soft / min(rx, ry), r)


def _bezier(p: list[tuple[float, float]], n: int = 40) -> np.ndarray:
    """Points of the Bezier curve with control points ``p`` (de Casteljau), (n, 2)."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]  # (n, 1, 1)
    cur = np.repeat(np.array(p, dtype=np.float64)[None], n, axis=0)  # (n, k, 2)
    while cur.shape[1] > 1:
        cur = cur[:, :-1] * (1 - t) + cur[:, 1:] * t
    return cur[:, 0]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
MM_PER_UNIT = 180.0  # one anatomy unit (image half-width at scale 1) is about 18 cm
SIDES: dict[Side, int] = {"right": -1, "left": 1}  # image x sign of each patient side (frontal)


@dataclass
class _Lung:
    """Geometry of one lung on the frontal view (lateral distance ``xs = sign * x``)."""

    sign: int
    cx: float
    cy: float
    rx: float
    ry: float
    diaphragm: float  # costophrenic angle height
    dome: float


def _lung_geometry(case: Case) -> dict[Side, _Lung]:
    a, f = case.anatomy, case.findings
    lw = a.lung_width * (1.04 if f.hyperinflation else 1.0)
    apex = a.apex_y - (0.04 if f.hyperinflation else 0.0)
    out: dict[Side, _Lung] = {}
    for side, sign in SIDES.items():
        dia = a.diaphragm_y + (0.04 if side == "left" else 0.0) + (0.12 if f.hyperinflation else 0.0)
        dia -= 0.07 * sum(1 for t in f.atelectasis if t.side == side)
        rx = (lw - 0.05) / 2.0
        cy = dia - 0.06
        out[side] = _Lung(sign, 0.05 + rx, cy, rx, cy - apex, dia, 0.05 if f.hyperinflation else 0.13)
    return out


def _zone_y(lung: _Lung, zone: Zone, t: float) -> float:
    """Height at fraction ``t`` (0 top .. 1 bottom) of a lung zone."""
    top = lung.cy - lung.ry
    bounds = {
        "upper": (top + 0.12, top + 0.45),
        "middle": (top + 0.45, top + 0.8),
        "lower": (top + 0.8, lung.diaphragm - lung.dome - 0.02),
    }[zone]
    return bounds[0] + t * (bounds[1] - bounds[0])


def _vessel_tree(
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
        steps = (lengths / n_steps)[:, None, None] * np.stack([np.cos(a) * sign, np.sin(a)], axis=-1)
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


def _frontal(case: Case, cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Attenuation map of the frontal (PA / AP) view, (H, W), about 0 (air) .. 2.5 (metal)."""
    a, f, acq = case.anatomy, case.findings, case.acquisition
    x, y = cv.x, cv.y
    soft = max(cv.px_unit, 0.006)
    ap = acq.projection == "AP"
    lungs = _lung_geometry(case)
    spine_x = f.scoliosis * np.sin(math.pi * np.clip((y + 0.85) / 1.4, 0.0, 1.0))  # (H, W)

    # body: elliptic cross-section, neck and shoulders, breasts, humeral heads
    wb = a.body_width
    half_w = 0.30 + (wb - 0.30) * np.sqrt(_smooth(-1.02, -0.55, y))  # sloping shoulders
    body = np.sqrt(np.clip(1.0 - (x / half_w) ** 2, 0.0, 1.0))
    att = a.tissue * (0.75 * body + 0.3 * _smooth(0.0, 0.15, body))
    att += 0.2 * a.tissue * _smooth(a.diaphragm_y - 0.05, a.diaphragm_y + 0.25, y) * body  # abdomen
    for s in (-1, 1):
        arm = np.sqrt(np.clip(1.0 - ((s * x - wb - 0.13) / 0.15) ** 2, 0.0, 1.0)) * _smooth(-0.86, -0.7, y)
        att += 0.6 * a.tissue * arm + 0.35 * _disc(x, y, s * (wb + 0.1), -0.7, 0.11, 0.12, 0.015)
        if a.sex == "F":
            att += 0.16 * a.tissue * _disc(x, y, s * 0.48, 0.42, 0.36, 0.26, 0.12)

    # lungs
    air = np.zeros_like(x)
    side_mask: dict[Side, np.ndarray] = {}
    for side, lg in lungs.items():
        xs = lg.sign * x
        e = _ellipse(xs, y, lg.cx, lg.cy, lg.rx, lg.ry)
        inside = _smooth(1.0 + soft / lg.rx, 1.0 - soft / lg.rx, e)
        y_dia = lg.diaphragm - lg.dome * np.clip(1.0 - ((xs - 0.33) / 0.5) ** 2, 0.0, 1.0)
        mask = inside * _smooth(y_dia + soft, y_dia - soft, y) * _smooth(0.0, 0.03, xs)
        side_mask[side] = mask
        air += (
            mask * (0.35 + 0.65 * np.sqrt(np.clip(1.0 - e, 0.0, 1.0))) * (1.0 - 0.25 * _smooth(-0.1, 0.5, y))
        )
    air *= 1.0 + 0.12 * f.hyperinflation + 0.06 * _lowfreq(rng, cv.size, 6)

    # mediastinum: upper band with aortic knob, heart
    upper_w = 0.2 if f.mediastinal_widening else 0.1
    med = _smooth(upper_w + soft, upper_w - soft, np.abs(x - 0.3 * spine_x)) * _smooth(0.1, -0.05, y)
    med = np.maximum(med, _disc(x, y, 0.1, -0.3, 0.08 + 0.04 * f.mediastinal_widening, 0.07, 0.03))
    lw = lungs["right"].cx + lungs["right"].rx
    heart_w = f.ctr * 2.0 * lw * (1.06 if ap else 1.0)
    hy = a.diaphragm_y - 0.08
    heart_ry = 0.32 + 0.15 * (f.ctr - 0.45)
    heart = _disc(x, y, 0.15 * heart_w, hy, heart_w / 2.0, heart_ry, soft)
    heart_core = _smooth(1.0, 0.55, _ellipse(x, y, 0.15 * heart_w, hy, heart_w / 2.0, heart_ry)) * heart
    air *= 1.0 - np.maximum(med, 0.75 * heart + 0.25 * heart_core)
    att += 0.08 * heart_core

    # hila and vessels
    trees = []
    for side, lg in lungs.items():
        hy_h = -0.06 - (0.04 if side == "left" else 0.0)
        hx = lg.sign * 0.2
        att += (0.14 + 0.08 * f.edema) * np.exp(-(((x - hx) / 0.07) ** 2) - ((y - hy_h) / 0.12) ** 2)
        trees.append(_vessel_tree(rng, (hx, hy_h), lg.sign))
    vessels = blur(cv.lines(*(np.concatenate(parts) for parts in zip(*trees, strict=True))), 0.6)
    if f.edema:
        vessels = blur(vessels, 0.6 / cv.px_unit * 0.01) * (1.3 + 0.4 * _smooth(0.0, -0.5, y))

    # trachea and main bronchi (air)
    tr_x = 0.3 * spine_x
    trachea = _smooth(0.042, 0.028, np.abs(x - tr_x)) * _smooth(-0.3, -0.36, y)
    att -= 0.3 * trachea * _smooth(-1.0, -0.85, y)

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
            collapsed = _disc(xs, y, cx, cy, rx, ry, soft)
            space = m * (1.0 - collapsed)
            e2 = _ellipse(xs, y, cx, cy, rx, ry)
            line = np.exp(-((((e2 - 1.0) * min(rx, ry)) / (0.7 * soft)) ** 2)) * m
            vm = m * collapsed
            air -= air * 0.25 * collapsed * ptx.size
            att -= 0.12 * space
            att += 0.35 * line
        for eff in f.effusions:
            if eff.side != side:
                continue
            h = (0.13, 0.24, 0.40)[eff.grade - 1]
            t = np.clip((xs - 0.1) / (lg.cx + lg.rx - 0.1), 0.0, 1.0)
            level = lg.diaphragm - lg.dome * 0.5 - h - 1.2 * h * t**3  # meniscus climbs the lateral wall
            fluid = _smooth(level - 0.01, level + 0.07, y) * _smooth(0.0, 0.04, xs)
            fluid *= _smooth(1.08, 1.0, _ellipse(xs, y, lg.cx, lg.cy, lg.rx, lg.ry))
            air *= 1.0 - fluid
            vm *= 1.0 - fluid
            att += 0.1 * fluid
        if f.pleural_thickening == side:
            e = _ellipse(xs, y, lg.cx, lg.cy, lg.rx, lg.ry)
            rim = _smooth(0.9, 0.96, e) * _smooth(1.02, 0.99, e) * _smooth(lg.diaphragm, lg.cy - lg.ry, y)
            rim = np.maximum(rim, _disc(xs, y, lg.cx + 0.02, lg.cy - lg.ry + 0.03, 0.16, 0.05, 0.02) * m)
            air *= 1.0 - 0.8 * rim
            att += 0.12 * rim
        vessel_mask += vm
    att += 0.13 * vessels * np.clip(vessel_mask, 0.0, 1.0)

    for op in f.opacities:
        lg = lungs[op.side]
        xs = lg.sign * x
        border = (0.65 if op.side == "left" else 0.35) * heart_w  # lateral heart border (xs)
        cx = lg.cx
        if op.zone != "upper":  # beside the heart, not hidden behind it
            cx = min(max(lg.cx, border + 0.8 * op.extent), lg.cx + lg.rx - 0.5 * op.extent)
        cy = _zone_y(lg, op.zone, 0.5)
        noise = np.clip(_lowfreq(rng, cv.size, 7), -1.5, 1.5)
        e = _ellipse(xs, y, cx, cy, op.extent * 1.3, op.extent)
        if op.kind == "consolidation":
            # lobar: bounded by a fissure-like margin, reaching the apex, heart border or diaphragm
            edge = 0.07 * noise
            if op.zone == "upper":
                dens = _smooth(0.02, -0.04, y - (lg.cy - lg.ry + 2.2 * op.extent) + edge) * _smooth(
                    0.0, 0.04, xs
                )
            elif op.zone == "lower":
                dens = _smooth(-0.02, 0.04, y - (lg.diaphragm - lg.dome - 1.5 * op.extent) + edge)
                # the costophrenic angle stays sharp (unlike an effusion)
                dens *= _smooth(0.05, 0.2, xs + edge) * _smooth(
                    lg.cx + lg.rx * 0.7, lg.cx + lg.rx * 0.3, xs + edge
                )
            else:
                # against the heart border: the border is lost (silhouette sign)
                e_mid = _ellipse(xs, y, border + 0.9 * op.extent, hy - 0.12, op.extent * 1.2, op.extent * 1.4)
                dens = _smooth(1.1, 0.7, e_mid + 0.15 * noise)
            bronch = cv.lines(*_vessel_tree(rng, (lg.sign * (cx - 0.08), cy - 0.05), lg.sign, 0.5)[:2])
            air *= 1.0 - 0.9 * dens
            att += 0.12 * dens - 0.2 * np.clip(bronch, 0.0, 1.0) * dens
        elif op.kind == "opacity":
            # ground glass: large, homogeneous, ill-defined
            e_gg = _ellipse(xs, y, cx, cy, op.extent * 1.6, op.extent * 1.3)
            dens = _smooth(1.1, 0.45, e_gg + 0.15 * noise)
            air *= 1.0 - 0.7 * dens
        else:
            fine = _lowfreq(rng, cv.size, 28)
            # bronchopneumonia: discrete dense patches scattered over the zone
            dens = _smooth(1.4, 0.9, e) * _smooth(0.2, 0.55, fine + 0.3)
            air *= 1.0 - 0.95 * dens
            att += 0.08 * dens
    for les in f.lesions:
        lg = lungs[les.side]
        cx = 0.14 + les.x * (lg.cx + lg.rx - 0.26)
        cy = _zone_y(lg, les.zone, les.y)
        r = les.diameter_mm / 2.0 / MM_PER_UNIT
        xs = lg.sign * x
        theta = np.arctan2(y - cy, xs - cx)
        lobulation = 1.0 + (0.12 if les.is_mass else 0.04) * np.sin(5 * theta + les.depth * 6.0)
        e = _ellipse(xs, y, cx, cy, r, r) / lobulation
        dens = _smooth(1.0 + soft / r, 1.0 - 2.0 * soft / r, e)
        air *= 1.0 - 0.7 * dens
        att += 0.3 * dens
    if f.edema:
        for lg in lungs.values():
            xs = lg.sign * x
            haze = np.exp(-(((xs - 0.22) / 0.28) ** 2) - ((y + 0.02) / 0.38) ** 2)
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
    spine = _smooth(0.09, 0.075, dxs) * (0.85 + 0.15 * np.cos(2 * math.pi * phase))
    pedicle = np.exp(-(((dxs - 0.055) / 0.014) ** 2) - ((fr - 0.35) / 0.14) ** 2)
    att += (0.2 * spine + 0.1 * pedicle) * _smooth(-1.0, -0.9, y)
    for side, lg in lungs.items():
        xs = lg.sign * x
        lat = lg.cx + lg.rx * np.sqrt(np.clip(1.0 - ((y - lg.cy) / (lg.ry + 0.1)) ** 2, 0.0, 1.0)) + 0.04
        window = _smooth(0.06, 0.12, xs) * _smooth(lat + 0.03, lat - 0.02, xs)
        phi = (y + 0.25 * xs - 0.9 * xs**2 - (lg.cy - lg.ry - 0.08)) / a.rib_spacing
        fx = f.fracture
        if fx is not None and fx.side == side:
            xb = 0.12 + fx.position * (lg.cx + lg.rx - 0.15)
            near = np.exp(-(((phi - fx.rib - 0.2) / 0.6) ** 2))
            phi = phi - fx.displacement * near * _smooth(xb - 0.004, xb + 0.004, xs)
        k = np.floor(phi)
        fr = phi - k
        band = _smooth(0.0, 0.1, fr) * _smooth(0.52, 0.42, fr)
        cortex = np.exp(-(((fr - 0.05) / 0.04) ** 2)) + np.exp(-(((fr - 0.47) / 0.04) ** 2))
        rib = (0.12 * band + 0.05 * cortex) * ((k >= 0) & (k < 11)) * window * _smooth(0.75, 0.45, y)
        if fx is not None and fx.side == side:
            gap = np.exp(-(((xs - xb) / 0.018) ** 2)) * (np.abs(phi - fx.rib - 0.18) < 0.7)
            rib *= 1.0 - 0.9 * gap
            yb = lg.cy - lg.ry - 0.08 - 0.25 * xb + 0.9 * xb**2 + (fx.rib + 0.2) * a.rib_spacing
            att += 0.3 * _disc(xs, y, xb, yb, 0.045, 0.032, 0.012)  # callus around the break
        att += rib
        d = np.clip(lg.cx + lg.rx + 0.05 - xs, 0.0, None)
        phi_a = (y - 0.5 * d + 0.28 * d**2 - (lg.cy - lg.ry + 0.05)) / (a.rib_spacing * 1.3)
        fa = phi_a - np.floor(phi_a)
        band_a = _smooth(0.0, 0.08, fa) * _smooth(0.3, 0.22, fa) * (phi_a >= 0) * (phi_a < 6)
        att += 0.07 * band_a * window * _smooth(0.2, 0.32, xs)
        t = (xs - 0.05) / 0.62
        yc = -0.64 - 0.13 * t + 0.025 * np.sin(2 * math.pi * t) - (0.07 if ap else 0.0)
        clav = _smooth(0.032, 0.018, np.abs(y - yc)) * _smooth(-0.02, 0.06, t) * _smooth(1.05, 0.95, t)
        att += 0.35 * clav
        if ap:
            xline = 0.6 - 0.12 * (y + 0.62) / 0.55
            scap = (
                _smooth(xline - 0.01, xline + 0.01, xs) * _smooth(-0.72, -0.6, y) * _smooth(-0.02, -0.12, y)
            )
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
        att += 2.0 * _disc(x, y, gx, -0.56, 0.085, 0.06, soft)
        tubes += [
            _bezier([(gx - 0.05, -0.55), (0.0, -0.7), (-0.05, -0.35), (-0.08, 0.05)]),
            _bezier([(gx - 0.05, -0.53), (-0.02, -0.65), (-0.08, 0.05), (0.25, hy + 0.1)]),
        ]
        tube_w += [0.008, 0.008]
    if dev.central_line:
        tubes.append(_bezier([(-0.22, -1.0), (-0.12, -0.75), (-0.06, -0.5), (-0.04, -0.15)]))
        tube_w.append(0.008)
    if dev.et_tube:
        for off in (-0.016, 0.016):
            tubes.append(np.array([[off, -1.0], [off, -0.45]]))
            tube_w.append(0.005)
    if tubes:
        att += 0.9 * np.clip(cv.lines(tubes, tube_w), 0.0, 1.5)
    return att


def _lateral(case: Case, cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Attenuation map of the left lateral view (anterior on the image left), (H, W)."""
    a, f = case.anatomy, case.findings
    x, y = cv.x, cv.y
    soft = max(cv.px_unit, 0.006)
    hyper = f.hyperinflation
    depth = 1.08 if hyper else 1.0  # antero-posterior diameter

    # body
    front = -0.62 * depth + 0.25 * _smooth(-0.55, -1.0, y)
    back = 0.78
    body = np.sqrt(np.clip(1.0 - ((x - (front + back) / 2) / ((back - front) / 2)) ** 2, 0.0, 1.0))
    att = a.tissue * (1.0 * body + 0.35 * _smooth(0.0, 0.12, body)) * 1.1
    att += 0.25 * _disc(x, y, -0.2, -0.75, 0.3, 0.2, 0.1)  # arms raised in front of the face

    # lungs (both superimposed)
    dia = a.diaphragm_y + (0.12 if hyper else 0.0) - 0.05 * bool(f.atelectasis)
    att += 0.2 * _smooth(dia, dia + 0.3, y) * body  # abdomen
    cx, cy, rx, ry = 0.02, dia - 0.05, 0.55 * depth, dia - 0.05 - a.apex_y
    e = _ellipse(x, y, cx, cy, rx, ry)
    u = np.clip((x + 0.5) / 1.05, 0.0, 1.0)
    y_dia = dia - 0.12 + 0.22 * u**1.6 - (0.04 if hyper else 0.1) * np.sin(math.pi * u)
    lung = _smooth(1.0 + soft / rx, 1.0 - soft / rx, e) * _smooth(y_dia + soft, y_dia - soft, y)
    air = lung * (0.35 + 0.65 * np.sqrt(np.clip(1.0 - e, 0.0, 1.0)))
    air *= 1.0 + 0.12 * hyper + 0.06 * _lowfreq(rng, cv.size, 6)

    # heart and great vessels
    hs = f.ctr / 0.46
    heart = _disc(x, y, -0.22 - 0.03 * (hs - 1), dia - 0.2, 0.27 * hs, 0.3 * min(hs, 1.3), soft)
    arch = np.abs(_ellipse(x, y, 0.1, -0.2, 0.2, 0.17) - 1.0) * 0.18
    aorta = _smooth(0.05, 0.03, arch) * _smooth(-0.18, -0.26, y)
    heart_core = _smooth(
        1.0, 0.5, _ellipse(x, y, -0.22 - 0.03 * (hs - 1), dia - 0.2, 0.27 * hs, 0.3 * min(hs, 1.3))
    )
    med = np.maximum(0.7 * heart + 0.3 * heart_core, 0.25 * aorta)
    if f.mediastinal_widening:
        med = np.maximum(med, 0.7 * _disc(x, y, -0.3, -0.35, 0.18, 0.2, 0.05))
    air *= 1.0 - med
    att += 0.05 * heart_core
    att += 0.15 * np.exp(-(((x - 0.05) / 0.08) ** 2) - ((y + 0.08) / 0.12) ** 2)  # hila
    trees = [_vessel_tree(rng, (0.05, -0.08), sign, 0.8) for sign in (1, -1)]
    vessels = blur(cv.lines(*(np.concatenate(parts) for parts in zip(*trees, strict=True))), 0.6) * lung
    trachea = _smooth(0.045, 0.03, np.abs(x - (-0.06 + 0.16 * (y + 1.0) / 0.8))) * _smooth(-0.2, -0.28, y)
    att -= 0.2 * trachea

    # findings
    if f.effusions:
        h = (0.1, 0.2, 0.33)[max(e.grade for e in f.effusions) - 1] * (1.2 if len(f.effusions) == 2 else 1.0)
        level = dia + 0.12 - h - 1.2 * h * u**4 - 0.25 * (1.0 - u)  # fills the posterior sulcus first
        fluid = _smooth(level - 0.01, level + 0.06, y) * _smooth(1.06, 1.0, e)
        air *= 1.0 - (0.65 if len(f.effusions) == 1 else 0.9) * fluid
        vessels *= 1.0 - fluid
    att += 0.12 * vessels
    centres = {"upper": (0.15, -0.45), "middle": (-0.25, 0.0), "lower": (0.35, dia - 0.15)}
    for op in f.opacities:
        ox, oy = centres[op.zone]
        noise = np.clip(_lowfreq(rng, cv.size, 7), -1.5, 1.5)
        eo = _ellipse(x, y, ox, oy, op.extent * 1.2, op.extent)
        if op.kind == "consolidation":
            dens = _smooth(1.15, 0.6, eo + 0.12 * noise)
            air *= 1.0 - 0.7 * dens
            att += 0.1 * dens
        elif op.kind == "opacity":
            air *= 1.0 - 0.5 * _smooth(1.15, 0.3, eo + 0.25 * noise)
        else:
            fine = _lowfreq(rng, cv.size, 28)
            air *= 1.0 - 0.6 * _smooth(1.3, 0.8, eo) * _smooth(0.0, 0.9, fine + 0.3)
    lg = _lung_geometry(case)
    for les in f.lesions:
        r = les.diameter_mm / 2.0 / MM_PER_UNIT
        ly = _zone_y(lg[les.side], les.zone, les.y)
        lx = -0.4 + les.depth * 0.8
        dens = _disc(x, y, lx, ly, r, r, soft)
        air *= 1.0 - 0.5 * dens
        att += 0.2 * dens
    if f.edema:
        haze = np.exp(-(((x - 0.0) / 0.35) ** 2) - ((y + 0.05) / 0.35) ** 2)
        air *= 1.0 - (0.25 if f.edema == 1 else 0.5) * haze
    if f.atelectasis:
        y0 = dia - 0.05
        plate = [np.array([[0.0, y0 - 0.12], [0.45, y0 + 0.02]])]
        band = np.clip(cv.lines(plate, [0.025]), 0.0, 1.0) * lung
        air *= 1.0 - 0.8 * band
    if f.pneumothorax is not None:
        air *= 1.0 + 0.15 * _disc(x, y, 0.0, a.apex_y + 0.12, 0.3, 0.12, 0.05) * lung
    att -= 0.8 * air

    # bones: thoracic spine (bodies with disc spaces), sternum, posterior ribs, scapula
    sx = 0.56 + 0.03 * np.cos(math.pi * (y + 0.2))
    phase = y / 0.09
    fr = phase - np.floor(phase)
    bodies = _smooth(0.075, 0.06, np.abs(x - sx)) * (
        0.75 + 0.25 * _smooth(0.0, 0.12, fr) * _smooth(0.9, 0.78, fr)
    )
    att += 0.3 * bodies + 0.12 * _smooth(0.04, 0.02, np.abs(x - sx - 0.14)) * _smooth(-1.0, -0.8, y)
    front_x = -0.6 * depth
    sternum = _smooth(0.03, 0.018, np.abs(x - front_x)) * _smooth(-0.6, -0.55, y) * _smooth(0.25, 0.2, y)
    att += 0.3 * sternum
    phi = (y - 0.45 * x - (a.apex_y - 0.15)) / (a.rib_spacing * 1.1)
    frr = phi - np.floor(phi)
    rib = _smooth(0.0, 0.08, frr) * _smooth(0.36, 0.28, frr) * _smooth(-0.1, 0.2, x) * _smooth(0.75, 0.6, x)
    att += 0.08 * rib * (phi >= 0) * (phi < 12)
    att += 0.1 * _disc(x, y, 0.45, -0.45, 0.18, 0.25, 0.06)  # scapulae

    dev = f.devices
    items: list[np.ndarray] = []
    widths_d: list[float] = []
    if dev.pacemaker:
        att += 2.0 * _disc(x, y, front_x + 0.02, -0.58, 0.03, 0.07, soft)
        items += [_bezier([(front_x + 0.03, -0.55), (-0.2, -0.65), (-0.05, -0.25), (-0.35, dia - 0.1)])]
        widths_d.append(0.008)
    if dev.central_line:
        items.append(_bezier([(-0.05, -1.0), (-0.08, -0.6), (-0.1, -0.4), (-0.12, -0.18)]))
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


def _display(att: np.ndarray, case: Case, cv: _Canvas, rng: np.random.Generator, view: View) -> np.ndarray:
    """Exposure, detector blur, quantum noise and collimation: attenuation -> [0, 1] display image."""
    acq = case.acquisition
    k = acq.exposure * (0.85 if view == "lateral" else 1.0)
    img = (1.0 - np.exp(-k * np.clip(att, 0.0, None))) / (1.0 - math.exp(-k * 2.2))
    img = np.clip(img, 0.0, 1.0) ** acq.gamma
    img = blur(img.astype(np.float32), 0.4 * cv.size / 256)
    img += acq.noise * np.sqrt(img + 0.02) * rng.standard_normal(img.shape, dtype=np.float32)
    img += 0.015 * acq.noise / 0.01 * _lowfreq(rng, cv.size, 4) * 0.3
    c = (np.arange(cv.size, dtype=np.float32) + 0.5) / cv.size * 2.0 - 1.0
    left, top, right, bottom = acq.collimation
    edge = 1.0 / cv.size
    inside = _smooth(left - edge, left + edge, c)[None, :] * _smooth(right + edge, right - edge, c)[None, :]
    inside = (
        inside
        * _smooth(top - edge, top + edge, c)[:, None]
        * _smooth(bottom + edge, bottom - edge, c)[:, None]
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
    cv = _Canvas.make(size, case.acquisition)
    att = _frontal(case, cv, rng) if view == "frontal" else _lateral(case, cv, rng)
    return _display(att, case, cv, rng, view)


# --------------------------------------------------------------------------------------------
# Dataset writer (R2Gen layout)
# --------------------------------------------------------------------------------------------
SPLITS = ("train", "val", "test")


def _save_png(img: np.ndarray, path: Path) -> None:
    """8-bit greyscale PNG of a [0, 1] image."""
    Image.fromarray(np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L").save(path)


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Numbers of train / val / test cases for ``n`` cases and the given fractions (sum 1)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    return n - n_val - n_test, n_val, n_test


def write_dataset(
    out: str | Path,
    n: int,
    seed: int,
    corpus: str | Path | None = None,
    dicom: bool = False,
    *,
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2),
    size: int = 256,
    dicom_size: int = 512,
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic studies in the R2Gen layout; returns the path of ``annotation.json``.

    Layout: ``out/annotation.json`` (``{"train": [...], "val": [...], "test": [...]}``, entries with
    ``id``, ``report``, ``image_path`` = [frontal, lateral] relative to ``out/images``, ``split``,
    ``labels`` = the 14 observations), ``out/images/<id>/0.png`` (frontal) and ``1.png`` (lateral)
    at ``size`` pixels, ``out/cases.jsonl`` (every case's parameters) and, with ``dicom``,
    ``out/dicom/<id>/{frontal,lateral}.dcm`` at ``dicom_size`` pixels (:func:`write_study`).
    Case ``i`` is drawn from ``default_rng([seed, i])``: the same arguments give the same bytes.
    ``corpus`` is an R2Gen ``annotation.json`` whose split ``s`` supplies the report sentences of
    split ``s`` (None: the built-in sentences).
    """
    from uar.data.report_composer import SentenceBank, compose_report

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    banks: dict[str, SentenceBank | None] = {
        s: (SentenceBank.from_annotation(corpus, s) if corpus is not None else None) for s in SPLITS
    }
    write_study = None
    if dicom:  # imported here: synthetic_dicom imports this module
        from uar.data.synthetic_dicom import write_study
    n_train, n_val, _ = split_counts(n, splits)
    annotation: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    with open(root / "cases.jsonl", "w", encoding="utf-8") as cases_fh:
        for i in tqdm(range(n), desc="synthetic studies", unit="study", disable=None if progress else True):
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            case = sample_case(np.random.default_rng([seed, i]))
            sid = f"syn{seed}_{i:06d}"
            (root / "images" / sid).mkdir(exist_ok=True)
            for k, view in enumerate(("frontal", "lateral")):
                _save_png(render(case, view, size=size), root / "images" / sid / f"{k}.png")
            report = compose_report(case, banks[split], np.random.default_rng([seed, i, 1]))
            annotation[split].append(
                {
                    "id": sid,
                    "report": report,
                    "image_path": [f"{sid}/0.png", f"{sid}/1.png"],
                    "split": split,
                    "labels": case.labels,
                }
            )
            cases_fh.write(json.dumps({"id": sid, "case": case.to_dict()}) + "\n")
            if write_study is not None:
                write_study(root / "dicom" / sid, case, seed, size=dicom_size)
    path = root / "annotation.json"
    path.write_text(json.dumps(annotation, indent=1), encoding="utf-8")
    return path
