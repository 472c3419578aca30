"""A rule-based, offline CheXpert-style labeler for chest X-ray reports.

It assigns each of the 14 CheXpert observations one of four values:

* ``1``  positive  (mentioned and affirmed),
* ``0``  negative  (mentioned and negated, or described as normal),
* ``-1`` uncertain (mentioned with hedging: "possible", "cannot exclude", ...),
* ``None`` not mentioned.

This is **not** CheXbert and not the Stanford CheXpert labeler: it is our own regular-expression
matcher in the NegEx / ConText tradition, written so that clinical-efficacy (CE) scores can be
computed without downloading anything. Every rule is listed in ``docs/evaluation.md``.

Pipeline for one report:

1. Normalise: lower-case, ``xxxx`` de-identification placeholders kept as a neutral word, hyphens in
   compounds ("air-space") and runs of white space collapsed.
   "cardio mediastinal" is joined to "cardiomediastinal".
2. Split into sentences on ``.``/``!``/``?`` followed by white space (decimals such as "1.2 cm" are not
   split), on new lines, and on the stand-alone " . " of R2Gen-cleaned text.
3. In each sentence find mentions (``MENTIONS``) minus excluded look-alikes (``UNMENTIONS``),
   each mention classified by its clause: the scope ends at terminators ("but", "however",
   "although", "which", "there is", ";", ...). Within the clause, "cannot exclude"-type phrases give
   uncertain; otherwise the nearest preceding trigger wins (negation "no", "without", "negative for",
   ... gives 0; hedging "possible", "likely", "suggestive of", ... gives -1); otherwise a trigger right
   after the mention up to the next comma ("is not seen", "has resolved" / "is suspected", "cannot
   be excluded") decides; otherwise the mention is positive.
   Pseudo-triggers ("no change", "no interval change", "to suggest") are blanked first.
4. Fixed descriptions add negative (``NEGATIVE_PHRASES``: "normal heart size", "lungs are clear")
   or uncertain (``UNCERTAIN_PHRASES``: "heart size is upper limits of normal") findings.
5. Aggregate per observation over all mentions: positive > uncertain > negative > not mentioned.
6. No Finding = 1 when the report has text and no observation other than No Finding and
   Support Devices is positive or uncertain (CheXpert convention), else None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

Label = int | None

# Heart / cardiomediastinum words used by several compound patterns.
_HEART = r"(?:heart(?: size)?|cardiac (?:silhouette|size|shadow|contours?)|heart shadow|cardiac)"
_MEDIASTINUM = (
    r"(?:cardiomediastinal (?:silhouette|contours?|shadow)|mediastinum|"
    r"mediastinal (?:silhouette|contours?|width|shadow))"
)
_ENLARGED = r"(?:enlarged|enlargement|large|larger|prominent|prominence|increased in size|widened|widening)"
# A short stretch inside one clause: no sentence or clause punctuation, at most 40 characters.
_GAP = r"[^.;,]{0,40}?"

# Mentions: one list of regular expressions per observation (matched on normalised sentences).
MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"\b(?:widened|widening of the|enlarged|enlargement of the|prominent) (?:superior )?"
        r"(?:cardiomediastinal|mediastin\w*)",
        r"\b(?:cardiomediastinal|mediastinal) (?:widening|enlargement|prominence)",
        rf"\b{_MEDIASTINUM}\b{_GAP}\b(?:{_ENLARGED})\b",
    ),
    "Cardiomegaly": (
        r"\bcardiomegaly\b",
        r"\b(?:enlarged|large|prominent|increased) (?:heart|cardiac (?:silhouette|size|shadow|contours?))\b",
        r"\b(?:enlargement of the (?:heart|cardiac (?:silhouette|shadow))|cardiac enlargement)\b",
        rf"\b{_HEART}\b{_GAP}\b(?:enlarged|enlargement|large|increased in size)\b",
    ),
    "Lung Opacity": (
        r"\bopaci(?:ty|ties|fication|fications|fied)\b",
        r"\binfiltrat(?:e|es|ion|ive)\b",
        r"\bair ?space (?:disease|process|opacit\w*)\b",
        r"\bdensit(?:y|ies)\b",
        r"\bhaz(?:y|iness)\b",
        r"\binterstitial (?:markings?|opacit\w*|prominence|disease|thickening|pattern|changes|abnormality)\b",
        r"\b(?:increased|prominent|coarse|coarsened) (?:lung |pulmonary |bronchovascular )?markings\b",
        r"\breticul(?:ar|onodular)\b",
        r"\bground glass\b",
        r"\bscar(?:ring|s)?\b",
        r"\bfibro(?:sis|tic)\b",
    ),
    "Lung Lesion": (
        r"\bnodul(?:e|es|ar|arity)\b",
        r"\bmass(?:es)?\b",
        r"\blesions?\b",
        r"\btumou?rs?\b",
        r"\bneoplas(?:m|ms|tic)\b",
        r"\bmalignan(?:cy|t)\b",
        r"\bcarcinoma\b",
        r"\bcancer\b",
        r"\bmetasta(?:sis|ses|tic)\b",
        r"\bcavit(?:y|ies|ary|ation)\b",
    ),
    "Edema": (
        r"\bedema\b",
        r"\b(?:vascular|venous|pulmonary) (?:congestion|engorgement|redistribution)\b",
        r"\bcongestive (?:heart )?failure\b",
        r"\bheart failure\b",
        r"\bchf\b",
        r"\bkerley\b",
        r"\bcephalization\b",
        r"\bfluid overload\b",
    ),
    "Consolidation": (r"\bconsolidat(?:ion|ions|ive|ed)\b",),
    "Pneumonia": (
        r"\bpneumoni(?:a|as|c)\b",
        r"\bbronchopneumonia\b",
        r"\binfect(?:ion|ions|ious|ive)\b",
    ),
    "Atelectasis": (
        r"\batelecta(?:sis|ses|tic)\b",
        r"\bcollapse[sd]?\b",
        r"\bvolume loss\b",
    ),
    "Pneumothorax": (
        r"\bpneumothora(?:x|xes|ces)\b",
        r"\bhydropneumothorax\b",
        r"\bptx\b",
    ),
    "Pleural Effusion": (
        r"\beffusions?\b",
        r"\bpleural fluid\b",
        r"\b(?:hydrothorax|hydropneumothorax)\b",
    ),
    "Pleural Other": (
        r"\bpleural (?:\w+ )?thickening\b",
        r"\bthickening of the pleura\b",
        r"\bpleural (?:plaques?|calcifications?)\b",
        r"\bcalcified pleural plaques?\b",
        r"\bfibrothorax\b",
        r"\bpleural(?: parenchymal)? scar(?:ring|s)?\b",
        r"\bapical (?:pleural )?(?:cap|capping)\b",
    ),
    "Fracture": (
        r"\bfractur(?:e|es|ed)\b",
        r"\bfx\b",
        r"\bcompression deformit(?:y|ies)\b",
    ),
    "Support Devices": (
        r"\b(?:pacemaker|pacer|aicd|icd|defibrillator)s?\b",
        r"\b(?:pacer|pacemaker|pacing) (?:leads?|wires?)\b",
        r"\b(?:picc|central venous|central|venous|arterial|dialysis|swan ganz|internal jugular|ij|"
        r"subclavian|midline) (?:line|catheter)s?\b",
        r"\bcatheters?\b",
        r"\b(?:endotracheal|et|nasogastric|ng|orogastric|og|feeding|dobhoff|enteric|chest|thoracostomy|"
        r"tracheostomy|gastric) tubes?\b",
        r"\btracheostomy\b",
        r"\b(?:port a cath|portacath|mediport|port)\b",
        r"\bstents?\b",
        r"\b(?:sternotomy|sternal) wires?\b",
        r"\b(?:prosthetic (?:mitral |aortic )?valves?|valve (?:replacement|prosthesis))\b",
        r"\b(?:lines and tubes|tubes and lines|support devices?)\b",
        r"\b(?:cardiac|implanted|implantable) devices?\b",
    ),
}

# Look-alikes that are not the observation (matched spans are removed before mention matching).
UNMENTIONS: dict[str, tuple[str, ...]] = {
    "Lung Opacity": (
        r"\b(?:bone|bony|osseous|soft tissue|calcific|calcified|metallic) "
        r"(?:densit(?:y|ies)|opacit(?:y|ies))\b",
        r"\bpleural(?: parenchymal)? scar(?:ring|s)?\b",
        r"\bpleural (?:\w+ )?thickening\b",
    ),
    "Lung Lesion": (
        r"\b(?:bony|bone|osseous|lytic|sclerotic|blastic|skin|soft tissue|chest wall) "
        r"(?:lesions?|mass(?:es)?)\b",
        r"\bmass effect\b",
    ),
    "Pleural Effusion": (r"\b(?:pericardial|joint) effusions?\b",),
    "Atelectasis": (r"\b(?:vertebral|vertebra|compression)\b[^.;,]{0,20}\bcollapse[sd]?\b",),
    "Support Devices": (r"\b(?:port|portable) (?:view|film|radiograph|technique)\b",),
}

# Descriptions that state an observation is absent without a negation word.
NEGATIVE_PHRASES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        r"\bnormal (?:sized? )?(?:heart|cardiac|cardiomediastinal)\b",
        rf"\b(?:{_HEART}|cardiomediastinal (?:silhouette|contours?))\b[^.;]{{0,60}}?"
        r"\b(?:normal|unremarkable|within normal limits)\b",
    ),
    "Enlarged Cardiomediastinum": (
        r"\bnormal (?:[a-z ]{0,30}? and )?(?:cardio)?mediastin\w*\b",
        rf"\b{_MEDIASTINUM}\b[^.;]{{0,60}}?\b(?:normal|unremarkable|within normal limits)\b",
    ),
    "Lung Opacity": (r"\b(?:lungs?|lung fields?)\b[^.;]{0,40}?\bclear\b", r"\bclear lungs?\b"),
    "Pleural Effusion": (r"\bpleural spaces? (?:is |are )?clear\b",),
}

# Descriptions that state an observation is borderline.
UNCERTAIN_PHRASES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        rf"\b{_HEART}\b[^.;]{{0,40}}?\b(?:upper limits? of normal|top normal|top of normal|upper normal|"
        r"borderline)\b",
        r"\bborderline (?:heart size|cardiac size|cardiomegaly)\b",
    ),
}

# Triggers. Scopes are clause-bounded (see _TERMINATOR).
_UNC_NEG = re.compile(
    r"\b(?:cannot|can not|can't|could not|not) (?:be )?(?:entirely |completely |totally )?"
    r"(?:excluded|exclude|ruled out|rule out)\b|\bdifficult to (?:exclude|rule out)\b"
)
_NEG_PRE = re.compile(
    r"\b(?:no|not|nor|without|negative for|free of|clear of|absence of|absent|resolution of|resolved|"
    r"removal of|rather than|never)\b"
)
_UNC_PRE = re.compile(
    r"\b(?:possible|possibly|probable|probably|likely|may|might|could|suspect(?:s|ed)?|"
    r"suspicious for|suspicion (?:of|for)|concern(?:ing)? for|question(?:able|ed)?|suggest\w*|borderline|"
    r"equivocal|indeterminate|presum\w*|favou?r\w*|versus|vs|differential|perhaps|uncertain|"
    r"worrisome for|r/o|rule out|evaluate for)\b"
)
_NEG_POST = re.compile(
    r"^[^,]{0,60}?\b(?:not (?:well |clearly |definitely |definitively )?(?:seen|identified|present|evident|"
    r"appreciated|visualized|demonstrated|detected|noted|visible|apparent)|(?:has|have) resolved|resolved|"
    r"(?:is|are) absent|(?:has|have|has been|have been) removed|removed|no longer|"
    r"(?:is|are|appears?) within (?:the )?(?:normal limits|limits of normal))\b"
)
_UNC_POST = re.compile(
    r"^[^,]{0,60}?\b(?:(?:is|are) (?:suspected|questioned|favou?red)\b|(?:is|are) (?:likely|possible|"
    r"probable)(?: present| seen)?\s*$|(?:may|might|could) be (?:present|seen)\b|(?:versus|vs)\b)"
)
# Pseudo-triggers: look like negation / hedging but are not (blanked before scanning).
_PSEUDO = re.compile(
    r"\b(?:no|without|not) (?:significant |appreciable |substantial |interval |definite )?"
    r"(?:interval )?(?:change|changed|increase|decrease|worsening|improvement)\b|\bnot only\b|"
    r"\bto suggest\b|\bto indicate\b|\bgram negative\b|\bage (?:indeterminate|undetermined)\b"
)
# Clause terminators: a trigger never reaches across them.
_TERMINATOR = re.compile(
    r"\b(?:but|however|although|though|except|which|whereas|while|aside from|apart from|"
    r"there (?:is|are|has been|have been)|otherwise|with the exception of)\b|;|, with\b|:"
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+|\s+\.(?:\s+|$)")
_PLACEHOLDER = re.compile(r"\bx{2,}\b")


@dataclass(frozen=True)
class Mention:
    """One matched mention: observation, character span in its sentence and its value."""

    observation: str
    start: int
    end: int
    value: int


def _compile(table: dict[str, tuple[str, ...]]) -> dict[str, tuple[re.Pattern[str], ...]]:
    return {obs: tuple(re.compile(p) for p in pats) for obs, pats in table.items()}


_MENTION_RE = _compile(MENTIONS)
_UNMENTION_RE = _compile(UNMENTIONS)
_NEGATIVE_RE = _compile(NEGATIVE_PHRASES)
_UNCERTAIN_RE = _compile(UNCERTAIN_PHRASES)


def normalise(text: str) -> str:
    """Lower-case, keep ``xxxx`` placeholders as the neutral word "xxxx", join hyphenated compounds."""
    text = text.lower().replace("\u2019", "'")
    text = _PLACEHOLDER.sub("xxxx", text)
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)
    text = re.sub(r"\bcardio mediastinal\b", "cardiomediastinal", text)
    return re.sub(r"[ \t]+", " ", text)


def split_sentences(text: str) -> list[str]:
    """Split a report into normalised sentences (decimal numbers such as "1.2 cm" stay whole)."""
    parts = _SENTENCE_SPLIT.split(normalise(text))
    return [p.strip(" .!?") for p in parts if p and p.strip(" .!?")]


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    """Replace each match of ``pattern`` by spaces of the same length (positions are kept)."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _clause(sentence: str, start: int, end: int) -> tuple[int, int]:
    """Bounds of the clause around ``[start, end)``: from the last terminator before to the next after."""
    lo, hi = 0, len(sentence)
    for m in _TERMINATOR.finditer(sentence):
        if m.end() <= start:
            lo = m.end()
        elif m.start() >= end:
            hi = m.start()
            break
    return lo, hi


def _classify(sentence: str, start: int, end: int) -> int:
    """Value (1 / 0 / -1) of the mention at ``sentence[start:end]`` from its clause's triggers."""
    lo, hi = _clause(sentence, start, end)
    before = sentence[lo:end]  # clause text up to the end of the mention (compound mentions included)
    after = sentence[end:hi]
    if _UNC_NEG.search(before) or _UNC_NEG.search(after.split(",")[0]):
        return -1
    neg = [m.end() for m in _NEG_PRE.finditer(before)]
    unc = [m.end() for m in _UNC_PRE.finditer(before)]
    if neg or unc:
        return 0 if max(neg, default=-1) > max(unc, default=-1) else -1
    if _NEG_POST.search(after):
        return 0
    if _UNC_POST.search(after):
        return -1
    return 1


def find_mentions(sentence: str) -> list[Mention]:
    """All classified mentions and fixed descriptions in one normalised sentence."""
    scan = _blank(sentence, _PSEUDO)
    found: list[Mention] = []
    for obs, patterns in _MENTION_RE.items():
        text = scan
        for un in _UNMENTION_RE.get(obs, ()):
            text = _blank(text, un)
        for pat in patterns:
            for m in pat.finditer(text):
                found.append(Mention(obs, m.start(), m.end(), _classify(scan, m.start(), m.end())))
    for table, value in ((_NEGATIVE_RE, 0), (_UNCERTAIN_RE, -1)):
        for obs, patterns in table.items():
            for pat in patterns:
                for m in pat.finditer(scan):
                    if value == 0 and re.search(r"\b(?:no|not)\b", m.group(0)):
                        continue
                    found.append(Mention(obs, m.start(), m.end(), value))
    return found


def _merge(values: list[int]) -> Label:
    """CheXpert aggregation over mentions: positive > uncertain > negative > not mentioned."""
    for v in (1, -1, 0):
        if v in values:
            return v
    return None


def _labels_from_mentions(mentions: list[Mention], has_text: bool) -> dict[str, Label]:
    labels: dict[str, Label] = {obs: None for obs in OBSERVATIONS}
    for obs in OBSERVATIONS[1:]:
        labels[obs] = _merge([m.value for m in mentions if m.observation == obs])
    findings = [labels[o] for o in OBSERVATIONS if o not in ("No Finding", "Support Devices")]
    if has_text and not any(v in (1, -1) for v in findings):
        labels["No Finding"] = 1
    return labels


def label_sentence(sentence: str) -> dict[str, Label]:
    """Label one sentence (any text treated as one unit); values as in :func:`label_report`."""
    norm = normalise(sentence).strip(" .!?")
    return _labels_from_mentions(find_mentions(norm), bool(norm))


def label_report(text: str) -> dict[str, Label]:
    """Label a free-text report: a dict with exactly the 14 :data:`OBSERVATIONS` as keys.

    Values: 1 positive, 0 negative, -1 uncertain, None not mentioned. An empty report gives
    None everywhere (No Finding included).
    """
    sentences = split_sentences(text)
    mentions = [m for s in sentences for m in find_mentions(s)]
    return _labels_from_mentions(mentions, bool(sentences))
