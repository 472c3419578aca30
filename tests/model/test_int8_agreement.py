"""``benchmarks/int8_agreement.py`` on a real (tiny) synthetic set and a tiny checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.tiny import make_tiny_checkpoint
from uar.synthetic.dataset import write_dataset

REPO = Path(__file__).resolve().parents[2]


def test_int8_agreement_report(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "set", 6, seed=3, size=64, splits=(0.0, 0.0, 1.0), progress=False).parent
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "int8_agreement.py"), str(data), "--n", "4",
         "--checkpoint", str(ckpt)],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout.splitlines()  # fmt: skip
    assert "4 studies" in out[0]
    assert out[1].startswith("identical reports: ") and "/4; identical positive findings: " in out[1]
    assert out[2].startswith("fp32: CE micro-F1") and out[3].startswith("int8: CE micro-F1")
