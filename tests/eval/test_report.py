"""impression_from_labels: the rule-based impression derived from the labeler's findings."""

from __future__ import annotations

import pytest

from uar.eval.labeler import OBSERVATIONS, label_report
from uar.report import NORMAL_IMPRESSION, impression_from_labels


def _labels(**values: int | None) -> dict[str, int | None]:
    out: dict[str, int | None] = dict.fromkeys(OBSERVATIONS)
    out.update({k.replace("_", " "): v for k, v in values.items()})
    return out


def test_normal_report_gives_normal_impression() -> None:
    labels = label_report("Heart is normal in size. Lungs are clear. No effusion or pneumothorax.")
    assert impression_from_labels(labels) == NORMAL_IMPRESSION


def test_positives_in_chexpert_order_and_uncertain_hedged() -> None:
    labels = _labels(Pleural_Effusion=1, Cardiomegaly=1, Pneumonia=-1, Pneumothorax=0)
    assert impression_from_labels(labels) == "Cardiomegaly. Possible pneumonia. Pleural effusion."


def test_support_devices_do_not_hide_normal() -> None:
    labels = label_report("Left chest wall pacemaker. Lungs are clear.")
    assert labels["Support Devices"] == 1
    assert impression_from_labels(labels) == f"{NORMAL_IMPRESSION} Support devices in place."


def test_from_generated_findings() -> None:
    text = "Heart size is mildly enlarged. Cannot exclude early infiltrate. No pneumothorax."
    assert impression_from_labels(label_report(text)) == "Cardiomegaly. Possible lung opacity."


def test_unknown_key_rejected() -> None:
    with pytest.raises(ValueError, match="unknown observations"):
        impression_from_labels({"Nodule": 1})
