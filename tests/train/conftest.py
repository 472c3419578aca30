"""Tiny R2Gen-layout datasets for the training tests: real IU-Xray report texts, real radiographs.

The IU-Xray release here has no images, so each study gets two real chest radiographs from
``covid_chestxray`` (downsized to 64 px to keep loading cheap) as its frontal and lateral view.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from uar.config import TrainConfig, UARConfig
from uar.visual.train import save_visual_tokenizer
from uar.visual.vqvae import VisualTokenizer, VQConfig

IMAGE_SIZE = 32  # 4 x 4 = 16 visual tokens per view


def write_r2gen_dataset(
    shared_data: Path, out: Path, *, n_train: int, n_val: int, max_words: int = 14
) -> Path:
    """Write ``out/annotation.json`` + ``out/images/<id>/{0,1}.png``; val repeats the first train studies.

    Reports are the shortest-first real IU-Xray training reports with at most ``max_words`` words.
    """
    ann = json.loads((shared_data / "iu_xray" / "annotation.json").read_text())
    reports = [e for e in ann["train"] if len(e["report"].split()) <= max_words][:n_train]
    pngs = sorted((shared_data / "covid_chestxray" / "images").glob("*.png"))
    entries = []
    for i, e in enumerate(reports):
        study = out / "images" / e["id"]
        study.mkdir(parents=True, exist_ok=True)
        for view in range(2):
            with Image.open(pngs[2 * i + view]) as im:
                im.convert("L").resize((64, 64), Image.BILINEAR).save(study / f"{view}.png")
        entries.append(
            {"id": e["id"], "report": e["report"], "image_path": [f"{e['id']}/0.png", f"{e['id']}/1.png"]}
        )
    val = [{**e, "split": "val"} for e in entries[:n_val]]
    train = [{**e, "split": "train"} for e in entries]
    (out / "annotation.json").write_text(json.dumps({"train": train, "val": val, "test": val[:1]}))
    return out


@pytest.fixture(scope="session")
def tiny_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 training studies, validation = the first 4 of them."""
    return write_r2gen_dataset(shared_data, tmp_path_factory.mktemp("iu_tiny"), n_train=8, n_val=4)


@pytest.fixture(scope="session")
def tiny_visual_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained (randomly initialised, fixed seed) 64-code tokenizer for 32 px views."""
    torch.manual_seed(0)
    tok = VisualTokenizer(
        VQConfig(codebook_size=64, image_size=IMAGE_SIZE, hidden=16, code_dim=16, n_res_blocks=1)
    )
    path = tmp_path_factory.mktemp("vq") / "tok.safetensors"
    save_visual_tokenizer(path, tok)
    return path


def tiny_model_cfg(**changes: object) -> UARConfig:
    """d = 48, one encoder and one decoder layer, 64 basis vectors."""
    base = UARConfig(
        d_model=48, n_heads=4, d_ff=96, n_enc_layers=1, n_dec_layers=1, n_basis=64, dropout=0.1, max_len=16
    )
    return UARConfig(**{**base.to_dict(), **changes})


def tiny_train_cfg(**changes: object) -> TrainConfig:
    """Batch 4, vocabulary threshold 1 (every word of 8 reports), no validation decoding cost to speak of."""
    base = TrainConfig(
        batch_size=4,
        lr=1e-3,
        epochs_stage1=2,
        epochs_stage2=1,
        val_beam_size=2,
        grad_clip=1.0,
        extra={"vocab_threshold": 1},
    )
    return TrainConfig.from_dict({**base.to_dict(), **changes})
