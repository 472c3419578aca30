"""``benchmarks/lsu_oracle_probe.py`` end to end on a tiny synthetic set with labels."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from tests.helpers.tiny import tiny_config, tiny_text_tokenizer
from uar.checkpoint import save_checkpoint
from uar.model import UAR
from uar.synthetic.dataset import write_dataset
from uar.visual.vqvae import VisualTokenizer, VQConfig

REPO = Path(__file__).resolve().parents[2]


def test_oracle_probe_prints_both_cross_entropies(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "set", 8, seed=3, size=64, splits=(0.5, 0.5, 0.0), progress=False).parent
    text_tok = tiny_text_tokenizer()
    cfg = replace(tiny_config(text_tok.vocab_size), visual_vocab_size=64)  # room for the oracle codes
    vq = VQConfig(codebook_size=64, image_size=32, hidden=16, code_dim=16, n_res_blocks=1)
    model, visual_tok = UAR(cfg).eval(), VisualTokenizer(vq)
    ckpt = save_checkpoint(tmp_path / "t.safetensors", model, text_tok, visual_tok, name="t", version="0")
    for layout in ("sparse", "dense"):
        out = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "lsu_oracle_probe.py"), str(data), "--checkpoint",
             str(ckpt), "--layout", layout, "--steps", "3", "--threads", "1"],
            capture_output=True, text=True, check=True, timeout=300,
        ).stdout.splitlines()  # fmt: skip
        assert out[0] == f"uar ({layout} oracle tokens, 3 steps), validation CE per word:"
        own, other = (float(part.split()[-1]) for part in out[1].split(",")[:2])
        assert math.isfinite(own) and math.isfinite(other)
