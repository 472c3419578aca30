"""VQ-VAE visual tokenizer: shapes, encode without gradient, training on real radiographs, file format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from uar.cli import tokenizer as tokenizer_cli
from uar.data.images import load_image, to_tensor
from uar.visual.train import (
    collect_image_paths,
    load_visual_tokenizer,
    save_visual_tokenizer,
    train_tokenizer,
)
from uar.visual.vqvae import VisualTokenizer, VQConfig

TINY = VQConfig(codebook_size=64, hidden=32, code_dim=32, n_res_blocks=1)


@pytest.fixture(scope="module")
def covid_pngs(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "covid_chestxray" / "images").glob("*.png"))[:32]


def test_shapes_and_no_gradient() -> None:
    torch.manual_seed(0)
    tok = VisualTokenizer(VQConfig())  # default size: 1024 codes, 112 px, x8
    x = torch.rand(2, 1, 112, 112, requires_grad=True)
    ids = tok.encode(x)
    assert ids.shape == (2, 196) and ids.dtype == torch.long
    assert not ids.requires_grad and int(ids.max()) < 1024
    assert tok.decode(ids).shape == (2, 1, 112, 112)
    out = tok.train()(x.detach())
    assert out.recon.shape == (2, 1, 112, 112) and out.ids.shape == (2, 196)
    assert out.loss.requires_grad and out.loss.dim() == 0
    assert 1.0 <= float(out.perplexity) <= 1024.0
    with pytest.raises(ValueError, match="expected images"):
        tok.encode(torch.rand(2, 1, 96, 96))
    with pytest.raises(ValueError, match="multiple of downsample"):
        VQConfig(image_size=100)


def test_training_on_real_radiographs(covid_pngs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "tok.safetensors"
    report = train_tokenizer(covid_pngs, out, TINY, epochs=4, batch_size=8, seed=0)
    assert report.n_images == 32 and report.steps == 16 and report.eval_on == "training"
    assert report.mse < report.initial_mse
    assert report.codes_used > 1 and report.perplexity > 1.0
    grid = Path(report.grid_path)
    assert grid.is_file() and grid.parent == out.parent
    with Image.open(grid) as im:
        assert im.size == (8 * 112, 2 * 112)
    loaded = load_visual_tokenizer(out)
    assert loaded.config == TINY
    x = torch.stack([to_tensor(load_image(p), 112) for p in covid_pngs[:4]])  # (4, 1, 112, 112)
    trained = VisualTokenizer(TINY)
    trained.load_state_dict(loaded.state_dict())
    assert torch.equal(loaded.encode(x), trained.encode(x))
    save_visual_tokenizer(tmp_path / "again.safetensors", loaded)
    assert torch.equal(load_visual_tokenizer(tmp_path / "again.safetensors").encode(x), loaded.encode(x))


def test_load_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a UAR visual tokenizer"):
        load_visual_tokenizer(other)
    with pytest.raises(FileNotFoundError):
        load_visual_tokenizer(tmp_path / "missing.safetensors")


def test_cli_on_annotation(shared_data: Path, covid_pngs: list[Path], tmp_path: Path, capsys) -> None:
    ann = shared_data / "covid_chestxray" / "annotation.json"
    assert len(collect_image_paths(ann)) == 347  # train split of the R2Gen-format annotation
    out = tmp_path / "cli" / "tok.safetensors"
    argv = ["tokenizer", "train", "--kind", "pixel", "--images", str(ann), "--out", str(out)]
    argv += ["--codebook", "32"]
    argv += ["--epochs", "1", "--batch", "8", "--max-images", "16", "--hidden", "16"]
    parser = argparse.ArgumentParser(prog="uar")
    tokenizer_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["eval_on"] == "held-out" and printed["n_eval_images"] == 51  # the val split
    assert printed["codes_used"] >= 1
    assert out.is_file() and (tmp_path / "cli" / "tok.recon.png").is_file()
    assert load_visual_tokenizer(out).config.codebook_size == 32
    bad = parser.parse_args(["tokenizer", "train", "--images", str(tmp_path / "nope"), "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="image source not found"):
        bad.func(bad)
