"""Known wording slips of IU-Xray report sentences, and their repair for display.

A model trained on IU-Xray (or on reports composed from its sentences, like the embedded default
model) learns the corpus as written, slips included: a missing "and" ("Normal heart size mediastinal
contours"), a truncated word ("pulmonary vascular appear"), a misspelling ("cardia mediastinal"), a
missing "within" ("Heart size is normal limits"). :func:`repair_wording` rewrites these phrasings
into the sentence a radiologist meant; it adds or replaces small words only, never a finding word, a
side, a grade or a negation, so no positive or uncertain CheXpert label of a sentence changes
(tested over every IU-Xray sentence it rewrites). Two slips hid a normal statement from the labeler
("normal heart size mediastinal contours" now reads as a normal mediastinum).
"""

from __future__ import annotations

import re

# (pattern on lower-case words, replacement); each seen in IU-Xray report sentences or in the
# default model's reports on held-out studies.
WORDING_REPAIRS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        # "Normal heart size mediastinal contours." / "Heart size mediastinal contours are normal"
        (r"\bheart size mediastinal\b", "heart size and mediastinal"),
        # "The cardiac silhouette pulmonary vascularity are normal."
        (r"\bsilhouette pulmonary vascularity\b", "silhouette and pulmonary vascularity"),
        # "The heart size and pulmonary vascular appear within normal limits."
        (r"\bpulmonary vascular (appears?|is|are)\b", r"pulmonary vascularity \1"),
        # "The cardia mediastinal silhouette"
        (r"\bcardia mediastinal\b", "cardiomediastinal"),
        # "The heart size of the limits of normal."
        (r"\bheart size of the limits of normal\b", "heart size is within normal limits"),
        # "Heart size is normal limits." / "Heart size normal limits." / "appears normal limits"
        (r"\b(is|are|appears?|size) normal limits\b", r"\1 within normal limits"),
        # "within normal limits for size contour"
        (r"\bfor size contour\b", "for size and contour"),
        # "A small right pleural effusion the present." / "Small right effusion the present."
        (r"\beffusion the present\b", "effusion is present"),
        # "Minimal streaky atelectasis the left lung base."
        (r"\batelectasis the (left|right)\b", r"atelectasis in the \1"),
        # "There is no pneumothorax large pleural effusion." / "No pneumothorax large effusion."
        (r"\bno pneumothorax large\b", "no pneumothorax or large"),
        # "No large pleural effusion no pneumothorax."
        (r"\beffusion no pneumothorax\b", "effusion or pneumothorax"),
        # "Normal cardiac size and contour unremarkable mediastinal silhouette."
        (r"\bcontour unremarkable\b", "contour, unremarkable"),
    )
)


def repair_wording(sentence: str) -> str:
    """Apply :data:`WORDING_REPAIRS` to one lower-case sentence (words separated by single spaces,
    commas attached or spaced); text without a known slip is returned unchanged."""
    for pattern, replacement in WORDING_REPAIRS:
        sentence = pattern.sub(replacement, sentence)
    return sentence
