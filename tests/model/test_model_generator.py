"""ReportGenerator and ``uar generate`` on tiny checkpoints with real PNG and DICOM radiographs."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import uar.generator
from tests.helpers.tiny import make_tiny_checkpoint
from uar.cli import generate as generate_cli
from uar.data.images import load_image
from uar.eval.labeler import OBSERVATIONS
from uar.generator import Report, ReportGenerator, default_checkpoint_path, readable_findings

PNG_FRONTALS = (
    "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.png",
    "auntminnie-b-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.png",
)


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        "uar2": make_tiny_checkpoint(root / "uar2.safetensors"),
        "uar1": make_tiny_checkpoint(root / "uar1.safetensors", n_views=1, seed=1),
        "base2": make_tiny_checkpoint(root / "base2.safetensors", preset="base"),
    }


@pytest.fixture(scope="module")
def images(shared_data, dicom_dir):
    pngs = [load_image(shared_data / "covid_chestxray" / "images" / name) for name in PNG_FRONTALS]
    dicoms = [
        load_image(dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm"),
        load_image(dicom_dir / "highdicom__dx_image.dcm"),
    ]
    return pngs + dicoms


def check_report(report: Report, gen: ReportGenerator) -> None:
    assert set(report.labels) == set(OBSERVATIONS)
    assert report.model_name == gen.name and report.model_version == "0.0.0"
    assert report.findings == readable_findings(gen.text_tokenizer.decode(report.token_ids))
    assert report.impression
    assert len(report.token_ids) <= gen.config.max_len and 0 not in report.token_ids


@pytest.mark.parametrize("key", ["uar2", "uar1", "base2"])
def test_generator_on_real_png_and_dicom(tiny_paths, images, key):
    gen = ReportGenerator.load(tiny_paths[key])
    assert gen.name.startswith("uar-tiny-")
    png, png2, dcm, lateral_dcm = images
    single = [gen.generate(png, png2), gen.generate(dcm, lateral_dcm), gen.generate(dcm)]
    for report in single:
        check_report(report, gen)
    batch = gen.generate_batch([(png, png2), (dcm, lateral_dcm), (dcm, None)])
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]
    # a missing lateral means the frontal is used in both slots
    assert gen.generate(dcm).token_ids == gen.generate(dcm, dcm).token_ids
    if gen.config.n_views == 1:  # a one-view model ignores the lateral
        assert gen.generate(png, png2).token_ids == gen.generate(png).token_ids
    greedy = gen.generate(png, png2, beam_size=1)
    check_report(greedy, gen)
    fast = gen.generate(png, png2, int8=True)  # int8 weight copies: a valid report, then fp32 again
    check_report(fast, gen)
    assert gen.generate(png, png2).token_ids == single[0].token_ids
    assert gen.generate_batch([]) == []


def test_visual_input_shapes(tiny_paths, images):
    lsu, base = ReportGenerator.load(tiny_paths["uar2"]), ReportGenerator.load(tiny_paths["base2"])
    studies = [(images[0], images[1]), (images[2], None)]
    ids = lsu.visual_input(studies)
    assert ids.shape == (2, 2, 16) and ids.dtype == torch.long
    assert int(ids.max()) < lsu.config.visual_vocab_size
    pix = base.visual_input(studies)
    assert pix.shape == (2, 2, 1, 32, 32) and 0.0 <= float(pix.min()) <= float(pix.max()) <= 1.0


def test_readable_findings():
    text = "the heart is normal in size . xxxx sternotomy wires . <unk> lungs are clear ."
    assert readable_findings(text) == "The heart is normal in size. xxxx sternotomy wires. Lungs are clear."
    assert readable_findings("") == ""
    assert readable_findings("no effusion") == "No effusion."
    assert readable_findings("right ij catheter tip in the lower svc svc . pa and lateral") == (
        "Right IJ catheter tip in the lower SVC. PA and lateral."
    )


def test_default_model_path_and_missing_default(tmp_path, monkeypatch):
    assert default_checkpoint_path().name == "uar-default.safetensors"
    assert default_checkpoint_path().parent.name == "default_model"
    monkeypatch.setattr(uar.generator, "default_checkpoint_path", lambda: tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError, match="make train-default"):
        ReportGenerator.load()
    with pytest.raises(FileNotFoundError):
        ReportGenerator.load(tmp_path / "nope.safetensors")


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="uar")
    generate_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_generate_cli(tiny_paths, shared_data, dicom_dir, capsys):
    png = shared_data / "covid_chestxray" / "images" / PNG_FRONTALS[0]
    dcm = dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm"
    assert run_cli(["generate", str(png), str(dcm), "--checkpoint", str(tiny_paths["uar2"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "findings", "impression", "labels", "model_name", "model_version", "token_ids", "domain", "withheld",
        "maps",
    }  # fmt: skip
    assert out["maps"] == []  # only with --maps
    assert out["domain"] == {"verdict": "unchecked", "score": None, "threshold": None}
    gen = ReportGenerator.load(tiny_paths["uar2"])
    assert out["token_ids"] == gen.generate(load_image(png), load_image(dcm)).token_ids
    assert run_cli(["generate", str(dcm), "--checkpoint", str(tiny_paths["base2"]), "--beam", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("FINDINGS: ") and "IMPRESSION (derived from the findings): " in text
    with pytest.raises(ValueError, match="at most one lateral"):
        run_cli(["generate", str(dcm), str(dcm), str(dcm), "--checkpoint", str(tiny_paths["uar2"])])
