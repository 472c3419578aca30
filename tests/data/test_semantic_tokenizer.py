"""Semantic visual tokenizer: frozen trunk + k-means codes, file format, checkpoints, CLI, W_I init."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from uar.checkpoint import load_checkpoint, save_checkpoint
from uar.cli import tokenizer as tokenizer_cli
from uar.config import UARConfig
from uar.data.images import load_image, to_tensor
from uar.modules.lsu import LSU
from uar.text.tokenizer import TextTokenizer
from uar.visual.kinds import build_visual_tokenizer, tokenizer_kind
from uar.visual.kmeans import spherical_kmeans, train_semantic_tokenizer
from uar.visual.semantic import SemanticConfig, SemanticTokenizer
from uar.visual.train import load_visual_tokenizer
from uar.visual.vqvae import VQConfig

SMALL = SemanticConfig(codebook_size=16, image_size=64)


@pytest.fixture(scope="module")
def covid_pngs(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "covid_chestxray" / "images").glob("*.png"))[:12]


@pytest.fixture(scope="module")
def fitted(covid_pngs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sem") / "tok.safetensors"
    report = train_semantic_tokenizer(covid_pngs[:8], out, SMALL, iterations=5, eval_paths=covid_pngs[8:])
    return out, report.to_dict()


def test_config_grid_and_kind() -> None:
    cfg = SemanticConfig()
    assert (cfg.image_size, cfg.grid, cfg.tokens_per_image, cfg.downsample, cfg.feature_dim) == (
        224,
        14,
        196,
        16,
        112,
    )
    assert SemanticConfig.from_dict(cfg.to_dict()) == cfg
    assert tokenizer_kind(cfg.to_dict()) == "semantic"
    assert tokenizer_kind(VQConfig().to_dict()) == "pixel"  # files from before the semantic kind
    with pytest.raises(ValueError, match="multiple of 16"):
        SemanticConfig(image_size=100)
    with pytest.raises(ValueError, match="unknown visual tokenizer kind"):
        tokenizer_kind({"kind": "dvae"})


def test_frozen_shapes_and_unit_features() -> None:
    tok = SemanticTokenizer(SMALL)
    tok.train()
    assert not tok.training and all(not p.requires_grad for p in tok.parameters())
    images = torch.rand(3, 1, 64, 64)
    feats = tok.features(images)
    assert feats.shape == (3, 16, 112)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3, 16), atol=1e-5)
    ids = tok.encode(images)
    assert ids.shape == (3, 16) and ids.dtype == torch.long
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 64, 64\)"):
        tok.encode(torch.rand(1, 1, 32, 32))


def test_spherical_kmeans_finds_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=1)
    x = torch.nn.functional.normalize(
        centres.repeat(50, 1) + 0.05 * torch.randn(200, 8, generator=gen), dim=1
    )
    found = spherical_kmeans(x, 4, iterations=10, seed=1)
    assert torch.allclose(found.norm(dim=1), torch.ones(4), atol=1e-5)
    # every true centre has a found code within a small angle
    assert (centres @ found.t()).max(dim=1).values.min() > 0.98
    with pytest.raises(ValueError, match="cannot seed"):
        spherical_kmeans(x[:3], 4)


def test_fit_on_real_radiographs_and_file_round_trip(
    fitted: tuple[Path, dict], covid_pngs: list[Path]
) -> None:
    path, report = fitted
    assert report["eval_on"] == "held-out" and report["n_eval_images"] == 4
    assert report["codes_used"] >= 8 and 0.3 < report["mean_cosine"] <= 1.0
    tok = load_visual_tokenizer(path)
    assert isinstance(tok, SemanticTokenizer) and tok.config == SMALL
    views = torch.stack([to_tensor(load_image(p), 64) for p in covid_pngs[:4]])
    fresh = SemanticTokenizer(SMALL)
    fresh.codebook.copy_(tok.codebook)
    assert torch.equal(tok.encode(views), fresh.encode(views))  # the stored trunk is the ImageNet one
    assert torch.equal(tok.encode(views), tok.encode(views))


def test_checkpoint_with_semantic_tokenizer(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    from uar.model import UAR

    tok = load_visual_tokenizer(fitted[0])
    text = TextTokenizer.build(
        ["the heart is normal , lungs clear ."], threshold=1, max_len=12, dataset="iu_xray"
    )
    cfg = UARConfig(
        vocab_size=text.vocab_size,
        max_len=12,
        image_size=64,
        visual_vocab_size=16,
        tokens_per_view=16,
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_enc_layers=1,
        n_dec_layers=1,
        n_basis=32,
    )
    path = save_checkpoint(
        tmp_path / "m.safetensors", UAR(cfg), text, tok, name="t", version="0", dtype=torch.float16
    )
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt.visual_tokenizer, SemanticTokenizer)
    images = torch.rand(2, 1, 64, 64)
    assert torch.equal(ckpt.visual_tokenizer.encode(images), tok.encode(images))  # tokenizer kept in fp32
    assert json.loads(json.dumps(ckpt.visual_tokenizer.config.to_dict()))["kind"] == "semantic"


def test_build_from_config_matches_kind() -> None:
    assert isinstance(build_visual_tokenizer(SMALL.to_dict()), SemanticTokenizer)
    assert type(build_visual_tokenizer(VQConfig(codebook_size=8).to_dict())).__name__ == "VisualTokenizer"


def test_cli_semantic_kind(covid_pngs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in covid_pngs[:6]:
        (folder / p.name).write_bytes(p.read_bytes())
    parser = argparse.ArgumentParser()
    tokenizer_cli.register(parser.add_subparsers())
    out = tmp_path / "t.safetensors"
    args = parser.parse_args(
        [
            "tokenizer",
            "train",
            "--images",
            str(folder),
            "--out",
            str(out),
            "--codebook",
            "8",
            "--size",
            "64",
            "--iterations",
            "3",
        ]
    )
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["codes_used"] >= 4 and printed["n_images"] == 6
    assert load_visual_tokenizer(out).config == SemanticConfig(codebook_size=8, image_size=64)
    # without --codebook the semantic kind asks for 8192 codes: more than 6 small views can seed
    default = parser.parse_args(
        ["tokenizer", "train", "--images", str(folder), "--out", str(out), "--size", "64"]
    )
    with pytest.raises(ValueError, match="cannot seed 8192 codes"):
        default.func(default)


def test_visual_embeddings_from_codes() -> None:
    torch.manual_seed(0)
    lsu = LSU(visual_vocab_size=16, vocab_size=10, d_model=128, n_views=2, tokens_per_view=4, max_text_len=8)
    xavier_std = float(lsu.visual_embed.weight.detach().std())
    codes = torch.nn.functional.normalize(torch.randn(16, 112), dim=1)
    codes[1] = torch.nn.functional.normalize(codes[0] + 0.01 * torch.randn(112), dim=0)
    lsu.init_visual_from_codes(codes)
    w = lsu.visual_embed.weight.detach()
    assert abs(float(w.std()) - xavier_std) < 0.1 * xavier_std  # the usual magnitude
    cos = torch.nn.functional.cosine_similarity
    assert cos(w[0], w[1], dim=0) > 0.95 > cos(w[0], w[2], dim=0)  # similar codes, similar rows
    with pytest.raises(ValueError, match="code vectors"):
        lsu.init_visual_from_codes(codes[:8])
