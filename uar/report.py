"""Rule-based impression derived from the labeler's findings.

The UAR model writes the findings section only. The impression shown in the SR and PDF is
**derived** from those findings by :func:`impression_from_labels`: the rule-based labeler
(:func:`uar.eval.labeler.label_report`) labels the generated findings, and each positive
observation becomes one sentence ("Cardiomegaly."), each uncertain one a hedged sentence
("Possible pneumonia."). It adds no information that is not already in the findings; laterality
and severity are not extracted (the labels do not carry them reliably).
"""

from __future__ import annotations

from collections.abc import Mapping

from uar.eval.labeler import OBSERVATIONS

NORMAL_IMPRESSION = "No acute cardiopulmonary abnormality."

# Wording of each observation in the impression, in CheXpert order (No Finding has none).
_PHRASES: dict[str, str] = {
    "Enlarged Cardiomediastinum": "enlarged cardiomediastinal silhouette",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung opacity",
    "Lung Lesion": "lung lesion",
    "Edema": "pulmonary edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural effusion",
    "Pleural Other": "pleural thickening or other pleural abnormality",
    "Fracture": "fracture",
    "Support Devices": "support devices in place",
}


def impression_from_labels(labels: Mapping[str, int | None]) -> str:
    """Summarise 14-observation labels (1 / 0 / -1 / None) as a short impression text.

    Positive observations give "Cardiomegaly." style sentences, uncertain ones "Possible
    pneumonia."; Support Devices (when positive) comes last. When no observation other than
    Support Devices is positive or uncertain the impression is "No acute cardiopulmonary
    abnormality." (followed by the devices sentence, if any). Unknown keys raise ``ValueError``.
    """
    unknown = set(labels) - set(OBSERVATIONS)
    if unknown:
        raise ValueError(f"unknown observations in labels: {sorted(unknown)}")
    sentences: list[str] = []
    for obs in OBSERVATIONS:
        if obs in ("No Finding", "Support Devices"):
            continue
        value = labels.get(obs)
        if value == 1:
            sentences.append(_PHRASES[obs].capitalize() + ".")
        elif value == -1:
            sentences.append(f"Possible {_PHRASES[obs]}.")
    if not sentences:
        sentences.append(NORMAL_IMPRESSION)
    if labels.get("Support Devices") == 1:
        sentences.append(_PHRASES["Support Devices"].capitalize() + ".")
    return " ".join(sentences)
