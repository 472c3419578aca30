"""The rule-based labeler against a hand-labeled test set, plus the ``uar label`` command.

``labeler_cases.jsonl`` holds sentences and short reports in IU-Xray style, plus held-out real IU-Xray
reports, each with the expected value of every observation it mentions (absent keys mean "not
mentioned", None). The expectations were written by reading each text; No Finding follows the
CheXpert convention from them.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pytest

from uar.cli import label as label_cli
from uar.eval.labeler import OBSERVATIONS, label_report, label_sentence, split_sentences

CASES_PATH = Path(__file__).with_name("labeler_cases.jsonl")
MIN_ACCURACY = 0.95


def _cases() -> list[dict]:
    return [json.loads(line) for line in CASES_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_case_set_covers_every_observation_and_value() -> None:
    cases = _cases()
    assert len(cases) >= 150
    seen = Counter((obs, v) for c in cases for obs, v in c["expected"].items())
    for obs in OBSERVATIONS:
        assert seen[(obs, 1)] >= 1, obs
        if obs != "No Finding":
            assert seen[(obs, 0)] >= 1, obs
    uncertain = {obs for obs, v in seen if v == -1}
    assert len(uncertain) >= 10
    assert sum(1 for c in cases if c["group"].startswith("lists")) >= 20


def test_accuracy_per_sentence_and_observation() -> None:
    cases = _cases()
    total = correct = 0
    confusions: Counter[tuple[str, object, object]] = Counter()
    errors: list[str] = []
    for case in cases:
        got = label_report(case["text"])
        assert list(got) == list(OBSERVATIONS)
        for obs in OBSERVATIONS:
            want = case["expected"].get(obs)
            total += 1
            if got[obs] == want:
                correct += 1
            else:
                confusions[(obs, want, got[obs])] += 1
                errors.append(f"  {obs}: expected {want}, got {got[obs]} <- {case['text']!r}")
    accuracy = correct / total
    print(f"\nlabeler accuracy {accuracy:.4f} ({correct}/{total} text-observation pairs, {len(cases)} texts)")
    print("confusions (observation, expected, got): count")
    for (obs, want, got), n in confusions.most_common():
        print(f"  {obs}, {want}, {got}: {n}")
    print("errors:\n" + "\n".join(errors))
    assert accuracy >= MIN_ACCURACY


@pytest.mark.parametrize(
    ("text", "obs", "value"),
    [
        ("No pleural effusion or pneumothorax.", "Pneumothorax", 0),
        ("Heart size is mildly enlarged.", "Cardiomegaly", 1),
        ("Cannot exclude early infiltrate.", "Lung Opacity", -1),
        ("No evidence of pneumonia.", "Pneumonia", 0),
        ("Normal heart size.", "Cardiomegaly", 0),
        ("Clear lungs.", "Lung Opacity", 0),
        ("Stable cardiomegaly.", "Cardiomegaly", 1),
        ("The left effusion has resolved.", "Pleural Effusion", 0),
    ],
)
def test_brief_examples(text: str, obs: str, value: int) -> None:
    assert label_sentence(text)[obs] == value


def test_aggregation_and_no_finding() -> None:
    # positive wins over uncertain and negative across sentences
    labels = label_report("Possible left effusion. No right effusion. Small left pleural effusion.")
    assert labels["Pleural Effusion"] == 1
    assert label_report("No effusion. Possible effusion.")["Pleural Effusion"] == -1
    # Support Devices does not stop No Finding; an uncertain finding does
    assert label_report("Pacemaker in place. Lungs are clear.")["No Finding"] == 1
    assert label_report("Possible small nodule.")["No Finding"] is None
    assert all(v is None for v in label_report("").values())


def test_sentence_splitting() -> None:
    assert split_sentences("Nodule measures 1.2 cm. No effusion.\nLungs clear") == [
        "nodule measures 1.2 cm",
        "no effusion",
        "lungs clear",
    ]
    assert split_sentences("the heart is normal . no effusion .") == ["the heart is normal", "no effusion"]
    # a negation never crosses a sentence boundary
    assert label_report("No pneumothorax. Small right effusion.")["Pleural Effusion"] == 1


def test_cli_prints_the_14_keys(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="uar")
    label_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["label", "Heart size is mildly enlarged. No pleural effusion."])
    assert args.func(args) == 0
    labels = json.loads(capsys.readouterr().out)
    assert list(labels) == list(OBSERVATIONS)
    assert labels["Cardiomegaly"] == 1 and labels["Pleural Effusion"] == 0 and labels["Edema"] is None
