"""End to end: the ``uar evaluate`` command of tiny checkpoints on a tiny R2Gen dataset built from real data.

The dataset holds six real IU-Xray test reports (with ground-truth ``labels`` objects written by hand
from each report) and real radiographs of the covid-chestxray set as their two views.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.tiny import make_tiny_checkpoint
from uar.cli import evaluate as evaluate_cli
from uar.eval.evaluate import evaluate_checkpoint
from uar.eval.labeler import OBSERVATIONS
from uar.generator import ReportGenerator, default_checkpoint_path

# (IU-Xray test id, hand-written labels of its report); unlisted observations are None.
STUDIES: tuple[tuple[str, dict[str, int]], ...] = (
    (
        "CXR1259_IM-0175",
        {"No Finding": 1, "Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, "Lung Opacity": 0},
    ),
    (
        "CXR2433_IM-0975",
        {
            "Atelectasis": 1,
            "Consolidation": 0,
            "Pleural Effusion": 0,
            "Pneumothorax": 0,
            "Cardiomegaly": 0,
            "Enlarged Cardiomediastinum": 0,
        },
    ),
    (
        "CXR1965_IM-0629",
        {"Cardiomegaly": 1, "Lung Opacity": 1, "Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0},
    ),
    (
        "CXR2082_IM-0714",
        {"Cardiomegaly": 1, "Edema": 1, "Lung Opacity": 1, "Pneumothorax": 0, "Pleural Effusion": 0},
    ),
    (
        "CXR3672_IM-1828",
        {
            "Support Devices": 1,
            "Edema": 1,
            "Lung Opacity": 0,
            "Pleural Effusion": 0,
            "Pneumothorax": 0,
            "Cardiomegaly": 1,
        },
    ),
    (
        "CXR3721_IM-1859",
        {
            "Lung Opacity": 1,
            "Atelectasis": -1,
            "Cardiomegaly": 0,
            "Enlarged Cardiomediastinum": 0,
            "Pneumothorax": 0,
            "Pleural Effusion": 0,
        },
    ),
)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    shared = shared_data
    root = tmp_path_factory.mktemp("iu_tiny")
    reports = {
        e["id"]: e["report"] for e in json.loads((shared / "iu_xray" / "annotation.json").read_text())["test"]
    }
    pngs = sorted((shared / "covid_chestxray" / "images").glob("*.png"))[: 2 * len(STUDIES)]
    (root / "images").mkdir()
    entries = []
    for i, (study_id, labels) in enumerate(STUDIES):
        views = []
        for png in pngs[2 * i : 2 * i + 2]:
            shutil.copy(png, root / "images" / png.name)
            views.append(png.name)
        full = {obs: labels.get(obs) for obs in OBSERVATIONS}
        entries.append(
            {
                "id": study_id,
                "report": reports[study_id],
                "image_path": views,
                "split": "test",
                "labels": full,
            }
        )
    (root / "annotation.json").write_text(json.dumps({"train": [], "val": [], "test": entries}))
    return root


def test_uar_evaluate_cli_with_compare(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uar = make_tiny_checkpoint(tmp_path / "uar.safetensors", preset="uar", seed=1)
    base = make_tiny_checkpoint(tmp_path / "base.safetensors", preset="base", seed=2)
    out = tmp_path / "result.json"
    parser = argparse.ArgumentParser(prog="uar")
    evaluate_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "evaluate",
            "--checkpoint",
            str(uar),
            "--compare",
            str(base),
            "--data",
            str(tiny_dataset),
            "--split",
            "test",
            "--out",
            str(out),
            "--beam",
            "2",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    for key in (
        "bleu_1",
        "bleu_2",
        "bleu_3",
        "bleu_4",
        "meteor",
        "rouge_l",
        "cider",
        "ce_micro_f1",
        "ce_macro_f1",
        "ce_per_observation",
        "ce5_micro_f1",
        "retrieval",
        "n",
        "sanity",
    ):
        assert key in result, key
    assert result["n"] == len(STUDIES)
    assert set(result["ce_per_observation"]) == set(OBSERVATIONS)
    for key in ("bleu_1", "bleu_4", "meteor", "rouge_l", "ce_micro_f1", "ce_gt_micro_f1"):
        assert 0.0 <= result[key] <= 1.0, key
    assert 0.0 <= result["cider"] <= 10.0
    # our labeler on the reference reports against the hand-written ground truth
    assert result["labeler_ref_vs_gt_micro_f1"] == pytest.approx(1.0)
    retrieval = result["retrieval"]
    assert retrieval["n"] == len(STUDIES) and 1.0 <= retrieval["median_rank"] <= len(STUDIES)
    assert 0.0 <= retrieval["recall_at_1"] <= retrieval["recall_at_5"] <= retrieval["recall_at_10"] == 1.0
    assert 0.0 <= result["sanity"]["duplicate_share"] <= 1.0
    assert [r["model_name"] for r in result["compare"]] == ["uar-tiny-base"]
    assert result["device"] == "cpu"
    # printed: one table with both runs and the paper's rows, CE tables, sanity figures
    assert "| uar-tiny-uar (uar.safetensors) |" in printed
    assert "| uar-tiny-base (base.safetensors) |" in printed
    assert "| UAR (paper) | 0.530 | 0.365 | 0.263 | 0.200 | 0.218 | 0.405 | 0.501 |" in printed
    assert "| Base (paper T2) |" in printed
    assert "ground-truth labels" in printed and "sanity:" in printed


def test_r2gen_references_go_through_the_vocabulary(tiny_dataset: Path, tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "uar.safetensors")
    quirk = evaluate_checkpoint(
        ckpt, tiny_dataset, beam_size=1, r2gen_references=True, meteor=False, n_samples=6
    )
    clean = evaluate_checkpoint(
        ckpt, tiny_dataset, beam_size=1, meteor=False, n_samples=6, both_references=True
    )
    assert quirk["references"] == "r2gen_vocab_roundtrip" and clean["references"] == "cleaned"
    # The tiny vocabulary lacks most IU words: the rebuilt references hold <unk>, the cleaned ones do not.
    assert any("<unk>" in s["reference"] for s in quirk["samples"])
    assert not any("<unk>" in s["reference"] for s in clean["samples"])
    assert [s["generated"] for s in quirk["samples"]] == [s["generated"] for s in clean["samples"]]
    assert "meteor" not in clean
    # one generation pass scored both ways gives the same numbers as the separate quirk run
    assert clean["nlg_r2gen_references"]["bleu_4"] == pytest.approx(quirk["bleu_4"])
    assert clean["nlg_r2gen_references"]["cider"] == pytest.approx(quirk["cider"])


def test_uar_evaluate_defaults_to_the_embedded_model(tiny_dataset: Path, tmp_path: Path) -> None:
    """Like ``uar generate``, ``uar evaluate`` without ``--checkpoint`` evaluates the embedded model."""
    out = tmp_path / "embedded.json"
    parser = argparse.ArgumentParser(prog="uar")
    evaluate_cli.register(parser.add_subparsers(dest="command", required=True))
    argv = ["evaluate", "--data", str(tiny_dataset), "--out", str(out), "--beam", "1"]
    args = parser.parse_args([*argv, "--max-studies", "2", "--no-meteor"])
    assert args.checkpoint is None
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"] == str(default_checkpoint_path())
    assert result["model_name"] == ReportGenerator.load().name and result["n"] == 2
