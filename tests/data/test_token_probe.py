"""``benchmarks/token_probe.py`` end to end on a tiny synthetic set, and its AUROC helper."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from uar.data.synthetic import write_dataset
from uar.visual.semantic import SemanticConfig, SemanticTokenizer
from uar.visual.train import save_visual_tokenizer
from uar.visual.vqvae import VisualTokenizer, VQConfig

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from token_probe import auroc  # noqa: E402


def test_auroc_against_hand_values() -> None:
    assert auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0])) == 0.5
    assert auroc(np.array([0.5, 0.6, 0.4]), np.array([1, 0, 0])) == 0.5
    assert np.isnan(auroc(np.array([0.3, 0.6]), np.array([0, 0])))


def test_probe_runs_on_both_kinds(tmp_path: Path) -> None:
    data = write_dataset(
        tmp_path / "set", 16, seed=3, size=64, splits=(0.75, 0.25, 0.0), progress=False
    ).parent
    semantic = SemanticTokenizer(SemanticConfig(codebook_size=16, image_size=64))
    semantic.codebook[:, :16] = torch.eye(16)  # unit codes along the first 16 feature axes
    save_visual_tokenizer(tmp_path / "sem.safetensors", semantic)
    pixel = VisualTokenizer(VQConfig(codebook_size=16, image_size=32, hidden=16, code_dim=16, n_res_blocks=1))
    save_visual_tokenizer(tmp_path / "pix.safetensors", pixel)
    out = tmp_path / "probe.json"
    printed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "token_probe.py"), "--data", str(data),
         "--tokenizer", f"semantic={tmp_path / 'sem.safetensors'}",
         "--tokenizer", f"pixel={tmp_path / 'pix.safetensors'}",
         "--train-studies", "12", "--val-studies", "4", "--out", str(out)],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    assert "linear token probes: 12 train / 4 held-out studies" in printed
    results = json.loads(out.read_text())
    assert [r["kind"] for r in results] == ["semantic", "pixel"]
    for r in results:
        for probe in ("bag", "position"):
            assert set(r[probe]["per_finding"]) and 0.0 <= r[probe]["macro_auroc"] <= 1.0
