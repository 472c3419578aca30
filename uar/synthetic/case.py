"""The case model of a synthetic study: anatomy, acquisition, findings and their labels.

A :class:`Case` holds a patient's anatomy, the acquisition settings, the findings with their
parameters and the report style (which absent findings the report states as absent); from it
:attr:`Case.labels` gives the 14 CheXpert observations (1 / 0 / None). A :class:`Region` says where
one finding is drawn on one view, in that view's pixel coordinates
(:func:`uar.synthetic.regions.finding_regions` computes them).

Coordinates: findings live in *anatomy coordinates* (x to the image right, y down, both in
[-1, 1] at scale 1; the patient's right lung is on the image left of the frontal view). Nothing
here draws or samples: :mod:`uar.synthetic.sampling` draws cases, :mod:`uar.synthetic.render`
draws them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

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


@dataclass(frozen=True)
class Region:
    """Where one finding is drawn on one view of a case, in that view's pixel coordinates.

    Pixel coordinates are (column, row) of the rendered image of ``image_size`` pixels square,
    origin at the top-left pixel's centre; ``box`` is (left, top, right, bottom) with right and
    bottom exclusive, clipped to the image (numpy ``img[top:bottom, left:right]``). The box bounds
    where the finding changes the image (the rotated, scaled and shifted anatomy-space extent),
    ``centre`` is the finding's anatomical centre mapped to pixels (it may lie outside a clipped box).
    """

    finding: str  # what is drawn: "cardiomegaly", "effusion", "consolidation", "pacemaker", ...
    observation: str  # its CheXpert observation (names of uar.eval.labeler.OBSERVATIONS)
    view: View
    side: Laterality | None  # patient side; None for midline findings (heart, mediastinum, devices)
    zone: Zone | None  # lung zone where the finding has one
    centre: tuple[float, float]  # (column, row), pixels
    box: tuple[int, int, int, int]  # (left, top, right, bottom), pixels, right / bottom exclusive
    image_size: int  # the coordinates refer to an image of this many pixels square

    def mask(self) -> np.ndarray:
        """Boolean ``(image_size, image_size)`` mask of :attr:`box`."""
        out = np.zeros((self.image_size, self.image_size), dtype=bool)
        left, top, right, bottom = self.box
        out[top:bottom, left:right] = True
        return out
