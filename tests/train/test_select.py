"""Checkpoint selection on validation CE micro-F1 (``TrainConfig.select``) and its log columns."""

from __future__ import annotations

import csv

import pytest

from tests.train.conftest import tiny_model_cfg, tiny_train_cfg
from uar.checkpoint import load_checkpoint
from uar.eval.labeler import label_report
from uar.train import train
from uar.train.runlog import RunLogger
from uar.train.trainer import validation_ce_f1


def test_validation_ce_f1_uses_ground_truth_labels_when_present():
    effusion = "there is a small right pleural effusion ."
    normal = "the lungs are clear . no pleural effusion ."
    truth = label_report(effusion)
    # study 1 has ground-truth labels (effusion) that disagree with its reference text (normal)
    assert validation_ce_f1([effusion], [normal], [truth]) == 1.0
    assert validation_ce_f1([effusion], [normal], [None]) == 0.0  # labeler on the reference
    assert validation_ce_f1([effusion, normal], [effusion, normal], [None, None]) == 1.0


def test_training_selects_on_validation_ce_f1(tiny_data, tiny_visual_tokenizer, tmp_path):
    out = tmp_path / "run"
    best = train(
        tiny_data,
        out,
        tiny_model_cfg(),
        tiny_train_cfg(select="ce_micro_f1"),
        visual_tokenizer_path=tiny_visual_tokenizer,
        progress=False,
    )
    epochs = list(csv.DictReader((out / "epochs.csv").open()))
    scores = [float(r["val_ce_micro_f1"]) for r in epochs]
    assert all(0.0 <= s <= 1.0 for s in scores) and all(r["val_bleu_4"] != "" for r in epochs)
    assert float(epochs[-1]["best_ce_micro_f1"]) == pytest.approx(max(scores), abs=1e-5)
    assert epochs[-1]["best_bleu_4"] == ""
    metrics = load_checkpoint(best).meta["metrics"]
    assert metrics["ce_micro_f1"] == pytest.approx(max(scores), abs=1e-5)
    with pytest.raises(ValueError, match="select must be one of"):
        train(tiny_data, tmp_path / "bad", tiny_model_cfg(), tiny_train_cfg(select="cider"),
              visual_tokenizer_path=tiny_visual_tokenizer, progress=False)  # fmt: skip


def test_csv_log_keeps_the_columns_of_an_existing_file(tmp_path):
    (tmp_path / "epochs.csv").write_text("stage,epoch,global_step,val_bleu_4\n1,0,2,0.5\n")
    RunLogger(tmp_path, "csv").epoch({"stage": 1, "epoch": 1, "global_step": 4, "val_bleu_4": 0.25,
                                      "val_ce_micro_f1": 0.75})  # fmt: skip
    rows = list(csv.reader((tmp_path / "epochs.csv").open()))
    assert rows == [
        ["stage", "epoch", "global_step", "val_bleu_4"],
        ["1", "0", "2", "0.5"],
        ["1", "1", "4", "0.25"],
    ]
