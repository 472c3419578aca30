"""The single-file safetensors checkpoint: round trip, fp16 storage, format-version checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.helpers.tiny import make_tiny_checkpoint, tiny_config, tiny_text_tokenizer
from uar.checkpoint import METADATA_KEYS, load_checkpoint, save_checkpoint
from uar.config import TrainConfig
from uar.decoding import beam_search
from uar.model import UAR
from uar.visual.vqvae import VisualTokenizer, VQConfig


def _reload_with_metadata(src, dst, **changes):
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in list(f.keys())}
    meta.update(changes)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_round_trip_restores_model_tokenizers_and_metadata(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    ckpt = load_checkpoint(path)
    assert ckpt.cfg.d_model == 32 and ckpt.cfg.visual_encoder == "lsu"
    assert ckpt.meta["model_name"] == "uar-tiny-uar" and ckpt.meta["format_version"] == 1
    assert ckpt.model.stage == 2 and not ckpt.model.training
    assert ckpt.text_tokenizer.to_dict() == tiny_text_tokenizer().to_dict()
    assert ckpt.visual_tokenizer is not None and ckpt.visual_tokenizer.config.image_size == 32
    with safe_open(str(path), framework="pt") as f:
        assert set(f.metadata()) == set(METADATA_KEYS)
        keys = list(f.keys())
    assert any(k.startswith("model.") for k in keys) and any(k.startswith("visual_tokenizer.") for k in keys)
    # saving the loaded model again gives identical tensors
    again = save_checkpoint(
        tmp_path / "again.safetensors",
        ckpt.model,
        ckpt.text_tokenizer,
        ckpt.visual_tokenizer,
        name="again",
        version="1.2.3",
        train_cfg=TrainConfig(batch_size=4),
        metrics={"bleu_4": 0.1},
    )
    with safe_open(str(path), framework="pt") as a, safe_open(str(again), framework="pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in list(a.keys()))
    second = load_checkpoint(again)
    assert second.meta["train_config"] == TrainConfig(batch_size=4)
    assert second.meta["metrics"] == {"bleu_4": 0.1} and second.meta["model_version"] == "1.2.3"
    ids = torch.randint(0, 32, (2, 2, 16))
    assert beam_search(ckpt.model, ids) == beam_search(second.model, ids)


def test_fp16_storage_halves_the_model_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    tok = tiny_text_tokenizer()
    model = UAR(tiny_config(tok.vocab_size, preset_name="base")).eval()
    full = save_checkpoint(tmp_path / "fp32.safetensors", model, tok, None, name="b", version="1")
    half = save_checkpoint(
        tmp_path / "fp16.safetensors", model, tok, None, name="b", version="1", dtype=torch.float16
    )
    assert half.stat().st_size < 0.6 * full.stat().st_size
    with safe_open(str(half), framework="pt") as f:
        assert f.get_tensor("model.head.weight").dtype == torch.float16
        assert not any(k.startswith("visual_tokenizer.") for k in list(f.keys()))
    loaded = load_checkpoint(half).model
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert b.dtype == a.dtype, name
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
        else:
            assert torch.equal(a, b), name
    images = torch.rand(2, 2, 1, 32, 32)
    assert len(beam_search(loaded, images)) == 2


def test_newer_format_and_foreign_files_are_refused(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "tiny.safetensors", n_views=1)
    newer = _reload_with_metadata(path, tmp_path / "newer.safetensors", format_version="2")
    with pytest.raises(ValueError, match="newer"):
        load_checkpoint(newer)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a UAR checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"definitely not safetensors")
    with pytest.raises(ValueError, match="not a safetensors"):
        load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.safetensors")
    cfg = load_checkpoint(path).cfg.to_dict()
    cfg["d_model"] = 64
    wrong = _reload_with_metadata(path, tmp_path / "wrong.safetensors", uar_config=json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(wrong)


def test_save_checks_model_and_tokenizers_agree(tmp_path):
    tok = tiny_text_tokenizer()
    lsu = UAR(tiny_config(tok.vocab_size))
    with pytest.raises(ValueError, match="visual tokenizer"):
        save_checkpoint(tmp_path / "x.safetensors", lsu, tok, None, name="x", version="1")
    with pytest.raises(ValueError, match="does not match the model"):
        save_checkpoint(
            tmp_path / "x.safetensors",
            lsu,
            tok,
            VisualTokenizer(VQConfig(codebook_size=32, image_size=64)),
            name="x",
            version="1",
        )
    wrong_vocab = UAR(tiny_config(tok.vocab_size + 1, preset_name="base"))
    with pytest.raises(ValueError, match="ids"):
        save_checkpoint(tmp_path / "x.safetensors", wrong_vocab, tok, None, name="x", version="1")
