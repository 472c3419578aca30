"""``uar export``: fp16 shipping copy with a new name, version and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.tiny import make_tiny_checkpoint
from uar.checkpoint import load_checkpoint
from uar.cli import main


def test_export_fp16_keeps_the_model_and_sets_metadata(tmp_path: Path) -> None:
    src = make_tiny_checkpoint(tmp_path / "run" / "best.safetensors")
    metrics = tmp_path / "test.json"
    metrics.write_text(json.dumps({"ce_micro_f1": 0.5, "n": 3}))
    out = tmp_path / "ship" / "model.safetensors"
    rc = main([
        "export", str(src), str(out), "--fp16", "--name", "shipped", "--version", "9.9.9",
        "--metrics", str(metrics),
    ])  # fmt: skip
    assert rc == 0
    assert out.stat().st_size < src.stat().st_size
    a, b = load_checkpoint(src), load_checkpoint(out)
    assert b.meta["model_name"] == "shipped" and b.meta["model_version"] == "9.9.9"
    assert b.meta["metrics"] == {"ce_micro_f1": 0.5, "n": 3}
    assert b.text_tokenizer.to_dict() == a.text_tokenizer.to_dict()
    for name, t in a.model.state_dict().items():
        assert torch.allclose(b.model.state_dict()[name].float(), t.float(), atol=1e-3, rtol=1e-3), name
    for name, t in a.visual_tokenizer.state_dict().items():  # tokenizer stays float32: same token ids
        assert torch.equal(b.visual_tokenizer.state_dict()[name], t), name


def test_export_of_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "nope.safetensors"), str(tmp_path / "out.safetensors")]) == 2
    assert "uar export" in capsys.readouterr().err


def test_export_average_ships_the_mean_of_the_weights(tmp_path: Path) -> None:
    runs = [make_tiny_checkpoint(tmp_path / f"epoch{i}.safetensors", seed=i) for i in range(3)]
    out = tmp_path / "averaged.safetensors"
    assert main(["export", str(runs[0]), str(out), "--average", *map(str, runs)]) == 0
    states = [load_checkpoint(p).model.state_dict() for p in runs]
    averaged = load_checkpoint(out)
    for name, t in averaged.model.state_dict().items():
        if t.is_floating_point():
            expected = sum(s[name] for s in states) / 3
            assert torch.allclose(t, expected, atol=1e-6), name
        else:
            assert torch.equal(t, states[0][name]), name
    base = load_checkpoint(runs[0])
    for name, t in base.visual_tokenizer.state_dict().items():  # configuration and tokenizers: the input's
        assert torch.equal(averaged.visual_tokenizer.state_dict()[name], t), name


def test_export_average_refuses_weights_of_another_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = make_tiny_checkpoint(tmp_path / "uar.safetensors")
    other = make_tiny_checkpoint(tmp_path / "base.safetensors", preset="base")
    out = tmp_path / "out.safetensors"
    assert main(["export", str(ours), str(out), "--average", str(ours), str(other)]) == 2
    assert "another model configuration" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(ours), str(out), "--average", str(ours), "--weights-from", "x.pt"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    garbage = tmp_path / "epoch.pt"
    garbage.write_bytes(b"\x80\x04not a pickle" * 10)
    assert main(["export", str(ours), str(out), "--average", str(ours), str(garbage)]) == 2
    err = capsys.readouterr().err
    assert "not a training resume file" in err and "not a pickle" not in err
    assert not out.exists()
