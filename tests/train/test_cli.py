"""``uar train``: flags and dataset defaults, and a real 2-process torchrun run that stops and resumes."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from uar.checkpoint import load_checkpoint
from uar.cli.train import configs_from_args, register

TINY = [
    "--d-model",
    "32",
    "--n-heads",
    "4",
    "--d-ff",
    "64",
    "--layers",
    "1",
    "--n-basis",
    "32",
    "--max-len",
    "16",
]


def _configs(*argv: str):
    parser = argparse.ArgumentParser(prog="uar")
    register(parser.add_subparsers(dest="command", required=True))
    return configs_from_args(parser.parse_args(["train", "--data", "d", "--out", "r", *argv]))


def test_iu_defaults_and_flags():
    model, tr = _configs()
    assert (model.max_len, model.n_views, model.visual_encoder, model.use_tir) == (60, 2, "lsu", True)
    assert (tr.dataset, tr.step_size, tr.seed, tr.two_stage, tr.bf16, tr.batch_size) == (
        "iu_xray",
        10,
        7580,
        True,
        False,
        16,
    )
    flags = [
        "--preset",
        "base",
        "--single-stage",
        "--bf16",
        "--epochs1",
        "3",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
    ]
    model, tr = _configs(
        *TINY,
        *flags,
        "--max-val-studies",
        "5",
        "--vocab-threshold",
        "1",
        "--no-augment",
        "--select",
        "ce_micro_f1",
    )
    assert (model.d_model, model.n_enc_layers, model.n_dec_layers, model.visual_encoder) == (32, 1, 1, "cnn")
    assert (tr.two_stage, tr.bf16, tr.epochs_stage1, tr.lr, tr.batch_size, tr.max_val_studies) == (
        False,
        True,
        3,
        1e-3,
        8,
        5,
    )
    assert tr.extra == {"vocab_threshold": 1, "augment": False}
    assert tr.select == "ce_micro_f1" and _configs()[1].select == "bleu_4"
    model, tr = _configs(*TINY, "--enc-layers", "0", "--token-noise", "0.15", "--word-noise", "0.2")
    assert (model.n_enc_layers, model.n_dec_layers, tr.token_noise, tr.word_noise) == (0, 1, 0.15, 0.2)
    with pytest.raises(ValueError, match="enc-layers"):
        _configs(*TINY, "--enc-layers", "-1")


def test_mimic_defaults():
    model, tr = _configs("--dataset", "mimic_cxr")
    assert (model.max_len, model.n_views) == (100, 1)
    assert (tr.dataset, tr.step_size, tr.seed, tr.epochs_stage1) == ("mimic_cxr", 3, 9153, 30)
    assert tr.extra["vocab_threshold"] == 10
    model, tr = _configs(
        "--dataset", "mimic_cxr", "--max-len", "80", "--step-size", "2", "--vocab-threshold", "5"
    )
    assert (model.max_len, tr.step_size, tr.extra["vocab_threshold"]) == (80, 2, 5)


def test_tensorboard_request_fails_early_or_logs(tiny_data, tiny_visual_tokenizer, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    paths = [
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "run"),
        "--tokenizer",
        str(tiny_visual_tokenizer),
    ]
    schedule = ["--epochs1", "1", "--epochs2", "0", "--batch-size", "8", "--vocab-threshold", "1"]
    argv = ["train", *paths, *TINY, *schedule, "--log", "tensorboard"]
    args = parser.parse_args(argv)
    code = args.func(args)
    if importlib.util.find_spec("tensorboard") is None:
        assert code == 2 and "pip install tensorboard" in capsys.readouterr().err
        assert not (tmp_path / "run" / "visual_tokens.safetensors").exists()  # failed before any data work
    else:
        assert code == 0 and any((tmp_path / "run" / "tensorboard").iterdir())


def _torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "uar", "train", *argv]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_two_processes_stop_and_resume(tiny_data, tiny_visual_tokenizer, tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(tiny_data), "--out", str(run), "--tokenizer", str(tiny_visual_tokenizer), *TINY,
            "--epochs1", "1", "--epochs2", "1", "--batch-size", "4", "--vocab-threshold", "1",
            "--max-val-studies", "3", "--val-beam-size", "2"]  # fmt: skip
    first = _torchrun(*args, "--max-steps", "3")  # 8 studies, global batch 4: stops inside stage 2
    assert first.returncode == 0, first.stderr[-3000:]
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert (
        state["progress"]["stage"],
        state["progress"]["step_in_epoch"],
        state["progress"]["finished"],
    ) == (2, 1, False)
    assert (run / "stage1_best.safetensors").is_file()

    second = _torchrun(*args, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().endswith("best.safetensors")
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["progress"]["finished"] and state["progress"]["global_step"] == 4
    epochs = list(csv.DictReader((run / "epochs.csv").open()))
    assert [(r["stage"], r["epoch"]) for r in epochs] == [("1", "0"), ("2", "0")]  # rank 0 alone writes
    ckpt = load_checkpoint(run / "best.safetensors")
    assert ckpt.cfg.d_model == 32 and ckpt.meta["train_config"].batch_size == 4


def test_keep_epochs_flag():
    assert not _configs()[1].keep_epochs
    assert _configs("--keep-epochs")[1].keep_epochs
