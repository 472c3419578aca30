"""The pointing game (uar.eval.pointing): trials against the renderer's regions, the head choice
stored by ``uar calibrate --grounding``, and benchmarks/pointing_game.py on a small real synthetic set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from uar.checkpoint import load_checkpoint
from uar.eval.pointing import Looked, case_of, play, score, select_grounding, trials
from uar.generator import ReportGenerator, default_checkpoint_path
from uar.grounding import PEAK_SIZE, SMOOTHING_CHOICES, SentenceMap
from uar.synthetic.dataset import write_dataset
from uar.synthetic.regions import finding_regions
from uar.synthetic.sampling import sample_case


def _effusion_case():
    for i in range(500):
        case = sample_case(np.random.default_rng([11, i]))
        if case.findings.effusions and not case.findings.devices.any:
            return case
    raise AssertionError("no case with an effusion")


def _map_at(sentence: str, col: float, row: float, g: int = 8) -> SentenceMap:
    grids = np.zeros((2, g, g), dtype=np.float32)
    grids[0, min(int(row * g), g - 1), min(int(col * g), g - 1)] = 1.0
    return SentenceMap(sentence, (0, 3), grids)


def test_a_map_pointing_into_the_drawn_box_is_a_hit() -> None:
    regions = finding_regions(_effusion_case(), "frontal", size=256)
    [box, *_] = [r.box for r in regions if r.observation == "Pleural Effusion"]
    cx, cy = (box[0] + box[2]) / 2 / 256, (box[1] + box[3]) / 2 / 256
    hit = trials([_map_at("There is a small pleural effusion.", cx, cy)], regions)
    assert len(hit) == 1 and hit[0].observation == "Pleural Effusion" and hit[0].hit
    assert 0 < hit[0].random_hit < 1
    far = (0.02 if cx > 0.5 else 0.98), 0.02
    miss = trials([_map_at("There is a small pleural effusion.", *far)], regions)
    assert len(miss) == 1 and not miss[0].hit
    # a negated finding, or one the case does not have, is no trial
    assert (
        trials(
            [_map_at("No pleural effusion.", cx, cy), _map_at("There is a pneumothorax.", cx, cy)], regions
        )
        == []
    )
    s = score(hit + miss)
    assert s.rates()["map"] == 0.5 and s.per_observation["Pleural Effusion"].n == 2


def test_the_smoothed_map_peaks_between_cells_so_a_midline_tube_can_be_hit() -> None:
    g = 14  # the semantic tokens' grid: no cell centre lies on the image's vertical midline
    px = 1 / PEAK_SIZE  # the peak is a pixel centre of a PEAK_SIZE lattice
    grids = np.zeros((2, g, g), dtype=np.float32)
    grids[0, 2, 6] = grids[0, 2, 7] = 0.4  # two equal cells either side of the midline
    grids[0, 2, 5] = grids[0, 2, 8] = grids[0, 1, 6] = grids[0, 3, 6] = 0.05
    x, y = SentenceMap("An endotracheal tube is present.", (0, 5), grids).peak(0)
    assert x == pytest.approx(0.5, abs=px) and y == pytest.approx(2.5 / g, abs=2 * px)
    sharp = np.zeros_like(grids)
    sharp[0, 4, 9] = 1.0  # one cell: its centre
    assert SentenceMap("x", (0, 1), sharp).peak(0) == pytest.approx((9.5 / g, 4.5 / g), abs=px)
    lopsided = sharp.copy()
    lopsided[0, 4, 10] = 0.5  # the right neighbour pulls the maximum right, not past the midpoint
    x, _ = SentenceMap("x", (0, 1), lopsided).peak(0)
    assert 9.5 / g < x < 10 / g
    edge = np.zeros_like(grids)
    edge[0, 0, 0] = 1.0
    assert SentenceMap("x", (0, 1), edge).peak(0) == pytest.approx((0.5 / g, 0.5 / g), abs=px)
    # the map shown is the same field: its brightest pixel is the peak, and a wider smoothing spreads it
    narrow, wide = (SentenceMap("x", (0, 1), lopsided, s) for s in (1 / 28, 3 / 14))
    for m in (narrow, wide):
        up = m.upsampled(0, (PEAK_SIZE, PEAK_SIZE))
        row, col = np.unravel_index(int(np.argmax(up)), up.shape)
        assert ((col + 0.5) * px, (row + 0.5) * px) == pytest.approx(m.peak(0)) and up.max() == 1.0
    assert (narrow.upsampled(0, (64, 64)) > 0.5).sum() < (wide.upsampled(0, (64, 64)) > 0.5).sum()
    with pytest.raises(ValueError, match="smoothing"):
        SentenceMap("x", (0, 1), sharp, 0.0).peak(0)
    # an endotracheal tube drawn between two cell centres (box narrower than a 16 px cell): a map on
    # either cell alone misses it, a map shared by both points at their common edge, inside the tube
    size, cell = 224, 224 // g
    for i in range(3000):
        case = sample_case(np.random.default_rng([13, i]))
        if not case.findings.devices.et_tube:
            continue
        regions = finding_regions(case, "frontal", size=size)
        [tube] = [r for r in regions if r.finding == "endotracheal tube"]
        left, top, right, bottom = tube.box
        if not any(left <= k * cell + cell / 2 - 0.5 < right for k in range(g)):
            break
    else:
        raise AssertionError("no tube drawn between cell centres")
    row, col = ((top + bottom) // 2) // cell, (left + right) // 2 // cell
    col = col if (left + right) / 2 >= col * cell + cell / 2 else col - 1  # cells col, col + 1 straddle it
    sentence = "An endotracheal tube is present."
    for cols, expect in (((col,), False), ((col + 1,), False), ((col, col + 1), True)):
        grids = np.zeros((2, g, g), dtype=np.float32)
        for c in cols:
            grids[0, row, c] = 1.0 / len(cols)
        [t] = trials([SentenceMap(sentence, (0, 5), grids)], regions)
        assert t.observation == "Support Devices" and t.hit is expect, cols


def test_heads_and_smoothing_are_chosen_together_the_narrower_width_on_a_tie() -> None:
    regions = finding_regions(_effusion_case(), "frontal", size=256)
    [box, *_] = [r.box for r in regions if r.observation == "Pleural Effusion"]
    g, words = 14, 6
    row, col = ((box[1] + box[3]) // 2) * g // 256, ((box[0] + box[2]) // 2) * g // 256
    attention = torch.zeros(2, 2, words + 1, 2 * g * g)  # (layers, heads, T, L)
    attention[..., 0] = 1.0  # every head looks at the top-left corner ...
    attention[1, 0, :, 0] = 0.0
    attention[1, 0, :, row * g + col] = 1.0  # ... but layer 1 head 0, at the effusion
    looked = [
        Looked(
            "syn0_000000",
            np.zeros((256, 256)),
            attention,
            [(0, 5)],
            ["There is a pleural effusion."],
            regions,
            2,
        )
    ]
    heads, smoothing, rate = select_grounding(looked, choices=(3 / 14, 1 / 7, 1 / 28))
    assert heads == [(1, 0)] and rate == 1.0 and smoothing == 1 / 28  # every width hits: the narrowest
    assert play(looked, "heads", [(0, 1)], 1 / 7).rates()["map"] == 0.0
    with pytest.raises(ValueError, match="no smoothing widths"):
        select_grounding(looked, choices=())


def test_case_of_checks_the_study_id_and_labels() -> None:
    case = sample_case(np.random.default_rng([2, 5]))
    assert case_of({"id": "syn2_000005", "labels": case.labels}) == case
    with pytest.raises(ValueError, match="not a synthetic study"):
        case_of({"id": "CXR12_IM-0001", "labels": {}})
    with pytest.raises(ValueError, match="does not match"):
        case_of({"id": "syn2_000006", "labels": case.labels | {"Pneumothorax": 1, "Cardiomegaly": 1}})


@pytest.mark.slow
def test_calibrate_grounding_and_the_benchmark_on_real_studies(tmp_path: Path) -> None:
    data = tmp_path / "syn"
    write_dataset(data, 16, seed=5, splits=(0.25, 0.75, 0.0), progress=False)
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(default_checkpoint_path(), ckpt)
    env_cmd = [sys.executable, "-m", "uar", "calibrate", str(ckpt), "--grounding", str(data)]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600, check=True)
    assert "grounding heads" in proc.stdout
    grounding = load_checkpoint(ckpt).grounding
    assert grounding is not None and grounding["val_studies"] == 12 and grounding["split"] == "val"
    assert 1 <= len(grounding["heads"]) <= 4 and grounding["smoothing"] in SMOOTHING_CHOICES
    assert ReportGenerator.load(ckpt).grounding_smoothing == grounding["smoothing"]
    out = tmp_path / "pg.json"
    bench = [
        sys.executable,
        str(REPO / "benchmarks" / "pointing_game.py"),
        "--data",
        str(data),
        "--split",
        "val",
    ]
    bench += ["--checkpoint", str(ckpt), "--speed-studies", "2", "--json", str(out)]
    proc = subprocess.run(bench, capture_output=True, text=True, timeout=600, check=True, cwd=REPO)
    results = json.loads(out.read_text())
    assert set(results["rules"]) == {"mean", "last", "contrast", "heads"}
    heads = results["rules"]["heads"]["overall"]
    assert heads["n"] > 0 and heads["map"] == pytest.approx(grounding["val_hit_rate"])
    assert results["smoothing"] == grounding["smoothing"]
    assert "rule heads" in proc.stdout and "maps off" in proc.stdout
