"""``finding_regions``: each finding's drawn region per view, checked against the rendered pixels.

A case is rendered with and without one finding (quantum noise off, so the two renders differ only
by the finding); the pixels the finding changes most must lie in its region's box.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from uar.synthetic.case import (
    AirspaceOpacity,
    Atelectasis,
    Case,
    Devices,
    Effusion,
    Findings,
    Lesion,
    Pneumothorax,
    RibFracture,
)
from uar.synthetic.regions import finding_regions
from uar.synthetic.render import render
from uar.synthetic.sampling import sample_case

SIZE = 128
FINDINGS: dict[str, Findings] = {
    "cardiomegaly": Findings(ctr=0.66),
    "widening": Findings(mediastinal_widening=True),
    "effusion right": Findings(effusions=(Effusion("right", 2),)),
    "effusion both": Findings(effusions=(Effusion("right", 3), Effusion("left", 3))),
    "pneumothorax": Findings(pneumothorax=Pneumothorax("left", 0.4)),
    "consolidation upper": Findings(opacities=(AirspaceOpacity("consolidation", "right", "upper", 0.2),)),
    "consolidation middle": Findings(opacities=(AirspaceOpacity("consolidation", "left", "middle", 0.2),)),
    "consolidation lower": Findings(opacities=(AirspaceOpacity("consolidation", "right", "lower", 0.2),)),
    "opacity": Findings(opacities=(AirspaceOpacity("opacity", "left", "middle", 0.2),)),
    "pneumonia": Findings(opacities=(AirspaceOpacity("pneumonia", "right", "lower", 0.2),)),
    "mass": Findings(lesions=(Lesion("left", "upper", 0.5, 0.5, 0.3, 60.0),)),
    "nodule": Findings(lesions=(Lesion("right", "lower", 0.6, 0.4, 0.7, 22.0),)),
    "edema": Findings(edema=2),
    "atelectasis": Findings(atelectasis=(Atelectasis("left", "lower"),)),
    "pleural thickening": Findings(pleural_thickening="right"),
    "rib fracture": Findings(fracture=RibFracture("left", 5, 0.7, 0.5)),
    "pacemaker": Findings(devices=Devices(pacemaker=True)),
    "central line": Findings(devices=Devices(central_line=True)),
    "et tube": Findings(devices=Devices(et_tube=True)),
    "sternotomy": Findings(devices=Devices(sternotomy=True)),
}
# Where the renderer changes pixels beyond the finding itself (measured, seeds 0-3):
LOOSER = {
    # lobar upper consolidation also brightens the soft tissue above and beside the apex
    ("consolidation upper", "frontal"): 0.3,
    # on the lateral view the higher dome moves the heart too
    ("atelectasis", "lateral"): 0.5,
}
NOT_ON_LATERAL = {"pleural thickening", "rib fracture"}


def _base(seed: int) -> Case:
    """A sampled patient and acquisition (rotation, shift, collimation kept) without noise or findings."""
    case = sample_case(np.random.default_rng([77, seed]))
    return dataclasses.replace(
        case, acquisition=dataclasses.replace(case.acquisition, noise=0.0), findings=Findings()
    )


@pytest.fixture(scope="module")
def normals() -> dict[tuple[int, str], np.ndarray]:
    return {
        (seed, view): render(_base(seed), view, size=SIZE)
        for seed in range(2)
        for view in ("frontal", "lateral")
    }


@pytest.mark.parametrize("view", ["frontal", "lateral"])
@pytest.mark.parametrize("name", list(FINDINGS))
def test_the_changed_pixels_lie_in_the_region(name, view, normals):
    for seed in range(2):
        case = dataclasses.replace(_base(seed), findings=FINDINGS[name])
        regions = finding_regions(case, view, size=SIZE)
        if view == "lateral" and name in NOT_ON_LATERAL:
            assert regions == ()
            continue
        assert regions, name
        diff = np.abs(render(case, view, size=SIZE) - normals[seed, view])
        strong = diff >= 0.25 * diff.max()
        inside = np.zeros_like(strong)
        for r in regions:
            assert r.view == view and r.image_size == SIZE
            left, top, right, bottom = r.box
            assert 0 <= left < right <= SIZE and 0 <= top < bottom <= SIZE
            assert left <= r.centre[0] <= right and top <= r.centre[1] <= bottom
            inside |= r.mask()
        share = strong[inside].sum() / strong.sum()
        assert share >= LOOSER.get((name, view), 0.9), (seed, share)
        assert inside.mean() < 0.55  # a region, not the whole image


def test_regions_follow_the_labels_side_and_zone():
    case = dataclasses.replace(
        _base(0),
        findings=Findings(
            ctr=0.64,
            effusions=(Effusion("left", 1),),
            lesions=(Lesion("right", "upper", 0.5, 0.5, 0.5, 25.0),),
            devices=Devices(pacemaker=True, et_tube=True),
        ),
    )
    frontal = finding_regions(case, "frontal", size=SIZE)
    positives = {k for k, v in case.labels.items() if v == 1}
    assert {r.observation for r in frontal} == positives
    assert [r.finding for r in frontal] == [
        "cardiomegaly",
        "effusion",
        "nodule",
        "pacemaker",
        "endotracheal tube",
    ]
    nodule = next(r for r in frontal if r.finding == "nodule")
    assert (nodule.side, nodule.zone) == ("right", "upper")
    assert nodule.centre[0] < SIZE / 2 and nodule.centre[1] < SIZE / 2  # patient's right = image left, upper
    effusion = next(r for r in frontal if r.finding == "effusion")
    assert effusion.centre[0] > SIZE / 2 and effusion.centre[1] > SIZE / 2
    assert {r.observation for r in finding_regions(case, "lateral", size=SIZE)} == positives


def test_regions_scale_with_the_image_and_reject_bad_arguments():
    case = dataclasses.replace(_base(1), findings=FINDINGS["mass"])
    (small,) = finding_regions(case, "frontal", size=SIZE)
    (big,) = finding_regions(case, "frontal", size=2 * SIZE)
    assert np.allclose(np.array(big.centre) + 0.5, 2 * (np.array(small.centre) + 0.5))
    assert np.allclose(big.box, 2 * np.array(small.box), atol=3)
    assert finding_regions(_base(1), "frontal") == ()
    with pytest.raises(ValueError, match="view"):
        finding_regions(case, "oblique")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        finding_regions(case, "frontal", size=8)
