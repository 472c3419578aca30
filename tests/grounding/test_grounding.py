"""Grounding maps: the decoder's cross-attention read back per sentence (uar.grounding), stored heads
in the checkpoint, the overlay picture and ``uar generate --maps``; the embedded model, real studies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from uar.checkpoint import load_checkpoint, write_grounding
from uar.generator import ReportGenerator, default_checkpoint_path
from uar.grounding import DEFAULT_SMOOTHING, combine, sentence_spans
from uar.grounding_overlay import LOW, render_overlay
from uar.synthetic.render import render
from uar.synthetic.sampling import sample_case


@pytest.fixture(scope="module")
def gen() -> ReportGenerator:
    return ReportGenerator.load()


@pytest.fixture(scope="module")
def study() -> tuple[np.ndarray, np.ndarray]:
    case = sample_case(np.random.default_rng([7, 3]))
    return render(case, "frontal", size=256), render(case, "lateral", size=256)


def test_sentence_spans_leave_out_full_stops() -> None:
    assert sentence_spans([5, 6, 2, 7, 2, 8], period_id=2) == [(0, 2), (3, 4), (5, 6)]
    assert sentence_spans([2, 2, 5], period_id=2) == [(2, 3)]
    assert sentence_spans([], period_id=2) == []


def test_combine_uses_the_rows_that_produced_each_sentence() -> None:
    attention = torch.zeros(2, 1, 5, 8)  # 2 layers, 1 head, 5 rows, 2 views x 2 x 2
    attention[:, :, 0:2, 1] = 1.0  # words 0-1 (rows 0-1) look at view 0 cell 1
    attention[:, :, 2:4, 6] = 1.0  # words 2-3 look at view 1 cell 2
    grids = combine(attention, [(0, 2), (2, 4)], 2, "mean")
    assert grids[0].shape == (2, 2, 2)
    assert grids[0][0, 0, 1] == pytest.approx(1.0) and grids[1][1, 1, 0] == pytest.approx(1.0)
    assert all(g.sum() == pytest.approx(1.0) for g in grids)
    with pytest.raises(ValueError, match="needs the"):
        combine(attention, [(0, 2)], 2, "heads")
    with pytest.raises(ValueError, match="not in a 2-layer"):
        combine(attention, [(0, 2)], 2, "heads", [(2, 0)])
    with pytest.raises(ValueError, match="square grids"):
        combine(attention, [(0, 2)], 3, "mean")


def test_generated_report_has_one_map_per_sentence(gen: ReportGenerator, study: tuple) -> None:
    plain = gen.generate(*study)
    report = gen.generate(*study, maps=True)
    assert plain.maps == [] and report.findings == plain.findings  # maps never change the words
    assert " ".join(m.sentence for m in report.maps) == report.findings
    g = int(np.sqrt(gen.model.memory_len // gen.config.n_views))
    for m in report.maps:
        assert m.grids.shape == (gen.config.n_views, g, g)
        assert m.grids.min() >= 0 and m.grids.sum() == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= m.peak(0)[0] <= 1.0 and 0.0 <= m.peak(0)[1] <= 1.0
        up = m.upsampled(0, (300, 200))
        assert up.shape == (300, 200) and up.min() >= 0.0 and up.max() <= 1.0
        json.dumps(m.to_dict())
    for rule in ("mean", "last", "contrast"):
        assert len(gen.generate(*study, maps=True, rule=rule).maps) == len(report.maps)


def test_out_of_domain_report_withheld_has_no_maps(gen: ReportGenerator) -> None:
    noise = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    report = gen.generate(noise, maps=True, withhold_out_of_domain=True)
    assert report.withheld and report.maps == []


def test_grounding_heads_are_stored_and_used(gen: ReportGenerator, study: tuple, tmp_path: Path) -> None:
    out = write_grounding(
        default_checkpoint_path(), {"heads": [[1, 2]], "note": "test"}, tmp_path / "g.safetensors"
    )
    ck = load_checkpoint(out)
    assert ck.grounding == {"heads": [[1, 2]], "note": "test"}
    with_heads = ReportGenerator(ck)
    assert with_heads.grounding_heads == [(1, 2)] and with_heads.grounding_smoothing == DEFAULT_SMOOTHING
    a = with_heads.generate(*study, maps=True)
    assert a.findings == gen.generate(*study).findings  # same weights, same words
    visual = gen.visual_input([study])
    attention = gen.model.cross_attention(visual, torch.tensor([[0, *a.token_ids]]))[0]
    spans = sentence_spans(a.token_ids, gen.text_tokenizer.word_id("."))
    expected = combine(attention, spans, gen.config.n_views, "heads", [(1, 2)])
    np.testing.assert_allclose(a.maps[0].grids, expected[0], atol=1e-6)
    assert all(m.smoothing == DEFAULT_SMOOTHING for m in a.maps)
    wide = write_grounding(out, {"heads": [[1, 2]], "smoothing": 0.2}, tmp_path / "wide.safetensors")
    b = ReportGenerator.load(wide).generate(*study, maps=True)
    assert [m.smoothing for m in b.maps] == [0.2] * len(b.maps) and b.maps[0].to_dict()["smoothing"] == 0.2
    np.testing.assert_allclose(b.maps[0].grids, a.maps[0].grids)  # the same attention, spread wider
    for bad in ({"heads": [[9, 0]]}, {"heads": []}, {"heads": "all"}):
        with pytest.raises(ValueError, match="grounding (head|metadata needs)"):
            write_grounding(default_checkpoint_path(), bad, tmp_path / "bad.safetensors")
    for smoothing in (0, -0.1, 0.9, float("nan"), "wide", True):
        with pytest.raises(ValueError, match="grounding smoothing"):
            write_grounding(
                default_checkpoint_path(), {"heads": [[1, 2]], "smoothing": smoothing}, tmp_path / "bad.st"
            )


def test_overlay_is_colour_with_a_legend(gen: ReportGenerator, study: tuple) -> None:
    report = gen.generate(*study, maps=True)
    picture = render_overlay(study[0], report.maps, 0, view_name="frontal")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[1] == 512 and picture.shape[0] > 512  # upscaled to 512, legend below
    image = picture[:512].astype(int)
    colour = np.abs(image[..., 0] - image[..., 2]) + np.abs(image[..., 1] - image[..., 2])
    # the maps are blended in colour (the default model's smoothed maps: a few per cent of the picture)
    # and, away from them, the radiograph stays grey
    assert (colour > 60).mean() > 0.002
    heat = np.max([m.upsampled(0, (512, 512)) for m in report.maps], axis=0)
    assert (colour[heat < LOW] > 60).mean() < 0.01
    legend = picture[512:].astype(int)
    assert (legend.sum(axis=2) > 200).mean() > 0.01  # text drawn on the black legend


def test_cli_generate_writes_one_picture_per_view(study: tuple, tmp_path: Path) -> None:
    paths = []
    for k, img in enumerate(study):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray((img * 255).astype(np.uint8)).save(paths[-1])
    out = tmp_path / "maps" / "study.png"
    cmd = [sys.executable, "-m", "uar", "generate", *map(str, paths), "--maps", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(proc.stdout)
    assert report["maps"] and all(set(m) >= {"sentence", "span", "share", "peak"} for m in report["maps"])
    for view in ("frontal", "lateral"):
        with Image.open(tmp_path / "maps" / f"study-{view}.png") as im:
            assert im.mode == "RGB" and im.width == 512
    proc = subprocess.run(
        cmd[:5] + ["--maps", str(tmp_path / "one.png")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "Grounding maps:" in proc.stdout


def test_checkpoint_with_hostile_grounding_metadata_is_refused(tmp_path: Path) -> None:
    with safe_open(str(default_checkpoint_path()), framework="pt") as f:
        metadata = dict(f.metadata())
    tensors = load_file(str(default_checkpoint_path()))
    hostile = ('{"heads": [[0, 99]]}', "[1, 2]", "not json {", '{"heads": [["0", 1]]}')
    hostile += ('{"heads": [[0, 1]], "smoothing": 1e308}', '{"heads": [[0, 1]], "smoothing": null}')
    for i, bad in enumerate(hostile):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(tensors, str(path), metadata={**metadata, "grounding": bad})
        with pytest.raises(ValueError, match="bad grounding metadata"):
            load_checkpoint(path)
