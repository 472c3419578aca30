"""Synthetic radiographs: determinism, value range, the prevalence design and visible findings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from uar.eval.labeler import OBSERVATIONS
from uar.synthetic.case import AirspaceOpacity, Case, Devices, Effusion, Findings, Lesion, Pneumothorax, Side
from uar.synthetic.render import render
from uar.synthetic.sampling import sample_case


def _case(findings: Findings, seed: int = 4) -> Case:
    """A fixed patient and a neutral acquisition (no rotation, shift or collimation)."""
    base = sample_case(np.random.default_rng(seed))
    acq = dataclasses.replace(
        base.acquisition, rotation_deg=0.0, shift=(0.0, 0.0), scale=0.95, collimation=(-1.0, -1.0, 1.0, 1.0)
    )
    return dataclasses.replace(base, acquisition=acq, findings=findings)


def _px(v: float, size: int) -> int:
    """Anatomy coordinate -> pixel index for the neutral acquisition (scale 0.95, no shift)."""
    return int(round((0.95 * v + 1.0) * size / 2.0))


def _mean(img: np.ndarray, side: Side, xs: tuple[float, float], ys: tuple[float, float]) -> float:
    """Mean of a frontal-view box given in lateral distance ``xs`` of one side and heights ``ys``."""
    size = img.shape[0]
    cols = (-xs[1], -xs[0]) if side == "right" else xs
    return float(img[_px(ys[0], size) : _px(ys[1], size), _px(cols[0], size) : _px(cols[1], size)].mean())


def test_same_seed_same_pixels_and_views_differ():
    a = sample_case(np.random.default_rng(11))
    b = sample_case(np.random.default_rng(11))
    assert a == b
    for view in ("frontal", "lateral"):
        x, y = render(a, view, size=128), render(b, view, size=128)
        assert x.dtype == np.float32 and x.shape == (128, 128)
        assert x.tobytes() == y.tobytes()
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert not np.array_equal(render(a, "frontal", size=128), render(a, "lateral", size=128))
    c = sample_case(np.random.default_rng(12))
    assert not np.array_equal(render(a, "frontal", size=128), render(c, "frontal", size=128))


def test_radiograph_contrast_lungs_dark_body_bright():
    case = _case(Findings())
    img = render(case, "frontal", size=256)
    lung = _mean(img, "right", (0.3, 0.55), (-0.4, 0.1))
    mediastinum = _mean(img, "left", (0.0, 0.05), (-0.3, 0.0))
    outside = _mean(img, "left", (0.55, 0.7), (-1.0, -0.95))  # beside the neck
    assert lung < mediastinum - 0.2
    assert outside < lung


def test_labels_have_the_14_observations_and_follow_findings():
    case = _case(
        Findings(
            ctr=0.64,
            effusions=(Effusion("left", 2),),
            devices=Devices(pacemaker=True),
        )
    )
    case = dataclasses.replace(case, negatives=("Pneumothorax", "Cardiomegaly"))
    labels = case.labels
    assert tuple(labels) == OBSERVATIONS
    assert labels["Cardiomegaly"] == 1  # positive wins over a stated negative
    assert labels["Pleural Effusion"] == 1 and labels["Support Devices"] == 1
    assert labels["Pneumothorax"] == 0
    assert labels["No Finding"] is None and labels["Edema"] is None
    normal = dataclasses.replace(case, findings=Findings(devices=Devices(et_tube=True)), negatives=())
    assert normal.labels["No Finding"] == 1 and normal.labels["Support Devices"] == 1


def test_prevalence_design():
    rng = np.random.default_rng(2024)
    n = 3000
    counts: Counter[str] = Counter()
    normal = 0
    for _ in range(n):
        labels = sample_case(rng).labels
        counts.update(k for k, v in labels.items() if v == 1)
        normal += all(v != 1 for k, v in labels.items() if k != "No Finding")
    assert 0.25 <= normal / n <= 0.40
    frequent = [k for k in OBSERVATIONS[1:] if counts[k] / n > 0.05]
    assert len(frequent) >= 6, counts
    assert all(counts[k] > 0 for k in OBSERVATIONS), counts


@pytest.mark.parametrize(
    ("findings", "side", "xs", "ys", "sign"),
    [
        (Findings(effusions=(Effusion("right", 2),)), "right", (0.3, 0.6), (0.05, 0.3), 1),
        (Findings(pneumothorax=Pneumothorax("left", 0.35)), "left", (0.55, 0.7), (-0.5, 0.0), -1),
        (
            Findings(opacities=(AirspaceOpacity("consolidation", "right", "lower", 0.18),)),
            "right",
            (0.25, 0.5),
            (0.05, 0.25),
            1,
        ),
        (Findings(edema=2), "left", (0.25, 0.45), (-0.2, 0.2), 1),
        (
            Findings(lesions=(Lesion("right", "upper", 0.5, 0.5, 0.5, 40.0),)),
            "right",
            (0.3, 0.6),
            (-0.7, -0.2),
            1,
        ),
    ],
)
def test_findings_change_their_lung_region(findings, side, xs, ys, sign):
    """Fluid, airspace disease and masses brighten their region, pneumothorax darkens it (112 px)."""
    normal = _case(Findings())
    sick = dataclasses.replace(normal, findings=findings)
    delta = _mean(render(sick, "frontal", size=112), side, xs, ys) - _mean(
        render(normal, "frontal", size=112), side, xs, ys
    )
    assert sign * delta > 0.02, delta


def test_cardiomegaly_widens_the_heart():
    """The left heart border moves out: the lung beside a normal heart turns heart-bright."""
    small = _case(Findings(ctr=0.44))
    big = dataclasses.replace(small, findings=Findings(ctr=0.66))
    heart_level = (small.anatomy.diaphragm_y - 0.2, small.anatomy.diaphragm_y - 0.05)
    region = ("left", (0.38, 0.48), heart_level)
    delta = _mean(render(big, "frontal", size=112), *region) - _mean(
        render(small, "frontal", size=112), *region
    )
    assert delta > 0.1, delta


def test_render_rejects_bad_arguments():
    case = _case(Findings())
    with pytest.raises(ValueError, match="view"):
        render(case, "oblique", size=64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        render(case, "frontal", size=8)


# numpy's SIMD features that select its transcendental loops (AVX-512 picks SVML kernels whose
# float32 results differ by an ulp from the AVX2 and SSE loops): disabled in the child process below
_SIMD_FEATURES = (
    "AVX512F AVX512CD AVX512VPOPCNTDQ AVX512VL AVX512BW AVX512DQ AVX512VNNI AVX512IFMA AVX512VBMI "
    "AVX512VBMI2 AVX512BITALG AVX512BF16 AVX512_SKX X86_V4 AVX512_CLX AVX512_CNL AVX512_ICL "
    "AVX2 FMA3 X86_V3 AVX F16C"
)


def test_same_pixels_whatever_simd_numpy_uses(tmp_path):
    """A seeded radiograph is the same float32 array on every x86-64 CPU: rendered here with all of
    numpy's SIMD loops and in a child process restricted to SSE loops (on an AVX-512 machine the two
    would differ without ``uar.synthetic.fmath``)."""
    cases = [sample_case(np.random.default_rng([3, i])) for i in range(3)]
    here = np.stack([render(c, v, size=256) for c in cases for v in ("frontal", "lateral")])
    script = (
        "import sys, numpy as np\n"
        "from uar.synthetic.render import render\n"
        "from uar.synthetic.sampling import sample_case\n"
        "cases = [sample_case(np.random.default_rng([3, i])) for i in range(3)]\n"
        "views = [render(c, v, size=256) for c in cases for v in ('frontal', 'lateral')]\n"
        "np.save(sys.argv[1], np.stack(views))\n"
    )
    out = tmp_path / "sse.npy"
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": _SIMD_FEATURES}
    subprocess.run([sys.executable, "-c", script, str(out)], env=env, check=True, timeout=300)
    assert np.array_equal(np.load(out), here)
