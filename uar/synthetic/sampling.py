"""Sampling synthetic cases: the prevalence design.

:func:`sample_case` draws one :class:`~uar.synthetic.case.Case`: 31 % of cases are normal, the others
get 1-3 finding types drawn without replacement by :data:`FINDING_WEIGHTS`, their parameters, an
acquisition and the absent findings the report states (docs/synthetic-data.md, "Labels and the
prevalence design").
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from uar.synthetic.case import (
    NEGATABLE,
    Acquisition,
    AirspaceOpacity,
    Anatomy,
    Atelectasis,
    Case,
    Devices,
    Effusion,
    Findings,
    Lesion,
    Pneumothorax,
    RibFracture,
    Side,
    Zone,
)

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
