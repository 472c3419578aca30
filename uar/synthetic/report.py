"""The report composer: a findings report for a synthetic case from real report sentences.

A :class:`SentenceBank` holds sentences indexed once by their *label signature*, the output of
:func:`uar.eval.labeler.label_sentence` without "No Finding" (e.g. ``{"Pleural Effusion": 0,
"Pneumothorax": 0}`` for "No pneumothorax or pleural effusion."). :func:`compose_report` covers
the case's ground-truth labels with sentences whose signatures agree with them: one sentence per
finding (its side, size and zone words must match the rendered finding), then normal statements
for the observations the case states as absent, in the order heart and mediastinum, lungs,
pleura, bones, devices. The composed report is checked with :func:`uar.eval.labeler.label_report`
and must equal ``case.labels``.

Sentences come from a corpus (an R2Gen ``annotation.json``; one split per bank: train sentences
for training cases, test sentences for test cases) and, where the corpus has no fitting
sentence, from ``fallback_sentences.txt`` beside this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from uar.eval.labeler import label_report, label_sentence
from uar.synthetic.case import Case

FALLBACK_PATH = Path(__file__).with_name("fallback_sentences.txt")

# Observations in report order, with their section (0 heart and mediastinum, 1 lungs, 2 pleura,
# 3 bones, 4 devices).
SECTION: dict[str, int] = {
    "Cardiomegaly": 0,
    "Enlarged Cardiomediastinum": 0,
    "Lung Opacity": 1,
    "Consolidation": 1,
    "Pneumonia": 1,
    "Lung Lesion": 1,
    "Edema": 1,
    "Atelectasis": 1,
    "Pneumothorax": 2,
    "Pleural Effusion": 2,
    "Pleural Other": 2,
    "Fracture": 3,
    "Support Devices": 4,
}
ORDER = tuple(SECTION)

# Words of sentences never used: comparisons with priors, de-identification gaps, measurements
# and findings the renderer does not draw.
_BLACKLIST = re.compile(
    r"xxxx|\bprior\b|previous|compar|interval|stable|unchanged|again|remain|persist|chronic|\bold\b|"
    r"healed|granulom|calcif|hernia|degenerat|spondyl|osteophyt|\bclips?\b|surg|postoperative|tortuous|"
    r"ectatic|kyphosis|osteopeni|demineral|\baort|lymph|\bhil(?:a|um|ar)\b|bronchovascular|bronchiect|emphysema|"
    r"copd|scar|fibro|\bct\b|recommend|follow|history|clinical|view|lateral film|\bexam|study|film|"
    r"since|\bnow\b|improv|wors|increas|decreas|resol|\bnew\b|\d|nipple|artifact|overlying|obscur|"
    r"hypoinfl|low lung volume|crowding|technique|portable|rotat|limited|cholecyst|gastric|"
    r"abdomen|bowel|breast|soft tissue|thyroid|mastectomy|axill|humer|shoulder|clavic|vertebra|"
    r"osseous|bony|spine|\btrachea\b|cardiomyopathy|pericard|retrocardiac|costophrenic|blunt|"
    r"hyperexpan|hyperinflat|scolio|elevat|eventration|diaphragm|flatten|underinflat|\bvs\b|versus|"
    r"\bor\b[^.]*\brepresent|could|may|might|possib|probab|likely|suspect|concern|question|believ|"
    r"otherwise|interim|develop|upper limit|top limit|top normal|borderline|:|\.\."
)
# Sentences that do not read as prose a radiologist would sign: a doubled word ("There there is"),
# corpus garbles ("Heart size is as is within", "normal appearance the cardiomediastinal"),
# characters other than letters, digits, spaces, commas, hyphens and the final full stop.
_GARBLED = re.compile(
    r"\b(\w+)\s+\1\b|\bas is within\b|\bappearance the\b|[^A-Za-z0-9 ,\-.]|[.,]\S"
    # two different verbs in a row ("The lung volumes are is somewhat low"; "is is": the first rule)
    r"|\b(?:are is|is are)\b"
    # a subject lost to a leading preposition ("In the pleural spaces are clear", "Of the pulmonary
    # vascularity is prominent")
    r"|^Of the\b|^In the (?:\w+ ){1,3}(?:is|are) (?:clear|normal|unremarkable|within|prominent)\b",
    re.IGNORECASE,
)
# A two-word sentence must state something ("No effusion.", "Lungs clear.", "Mild cardiomegaly."),
# not name a body part ("Left ankle.", "Thoracic spine.").
_TELEGRAPHIC = re.compile(
    r"^(?:no|mild|moderate|marked|severe|normal|clear|hyperexpanded|hyperinflated)\b|"
    r"\b(?:normal|clear|unremarkable|noted)\.$",
    re.IGNORECASE,
)
# Words a distractor sentence (hyperinflation, scoliosis) may use although blacklisted otherwise.
_DISTRACTOR_OK = re.compile(r"hyperexpan|hyperinflat|scolio|spine")
_SIDE = {
    "right": (r"\bright\b", r"\b(?:left|lingula\w*|bilateral\w*|both|bibasilar|bases|biapical)\b"),
    "left": (r"\bleft\b", r"\b(?:right|bilateral\w*|both|bibasilar|bases|biapical)\b"),
    "both": (r"\b(?:bilateral\w*|both)\b", r"\b(?:right|left)\b"),
}
_ZONE = {
    "upper": (r"\b(?:upper|apical|apex)\b", r"\b(?:lower|base|basilar|basal|mid|middle|lingula\w*)\b"),
    "middle": (r"\b(?:mid|middle|perihilar|lingula\w*)\b", r"\b(?:upper|apical|lower|base|basilar)\b"),
    "lower": (r"\b(?:lower|base|basilar|basal)\b", r"\b(?:upper|apical|mid|middle|lingula\w*)\b"),
}
_GRADE = {
    "mild": r"\b(?:mild|mildly|small|trace|minimal)\b",
    "moderate": r"\b(?:moderate|moderately)\b",
    "marked": r"\b(?:marked|markedly|severe|severely|large|massive|massively)\b",
}
_DEVICES = {
    "pacemaker": r"\b(?:pacemaker|pacer|pacing)\b",
    "central_line": r"\b(?:central|venous catheter|picc|jugular|subclavian)\b",
    "et_tube": r"\b(?:endotracheal|et tube)\b",
    "sternotomy": r"\bsternotomy\b",
}


@dataclass(frozen=True)
class Sentence:
    """One report sentence, its normalised text and its label signature (no "No Finding")."""

    text: str
    norm: str
    signature: tuple[tuple[str, int], ...]

    @property
    def labels(self) -> dict[str, int]:
        """The signature as a dict."""
        return dict(self.signature)


def _signature(text: str) -> tuple[tuple[str, int], ...]:
    labels = label_sentence(text)
    return tuple((k, v) for k, v in labels.items() if k != "No Finding" and v is not None)


def split_report(text: str) -> list[str]:
    """Split a report into sentences, keeping their case; each ends with a full stop."""
    out = []
    for part in re.split(r"(?<=[.!?])\s+|(?<=[a-z][.!?])(?=[A-Z])", text.strip()):
        part = re.sub(r"\b(\w+) \1\b", r"\1", part.strip())
        if part:
            out.append(part if part[-1] in ".!?" else part + ".")
    return out


def reads_as_prose(sentence: str, *, states_finding: bool = False) -> bool:
    """Whether a corpus sentence can go into a report as it is: capitalised, one final full stop,
    no doubled word or known garble, and a statement rather than an orphan fragment (a two-word
    sentence must name a finding, ``states_finding``, or say something of a structure)."""
    words = sentence.split()
    if not words or not sentence[0].isupper() or not sentence.endswith(".") or _GARBLED.search(sentence[:-1]):
        return False
    return len(words) > 2 or states_finding or bool(_TELEGRAPHIC.search(sentence))


@dataclass
class SentenceBank:
    """Usable sentences indexed by the observations of their signature (``by_obs[""]``: empty ones)."""

    sentences: list[Sentence]
    by_obs: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.sentences):
            keys = [k for k, _ in s.signature] or [""]
            for k in keys:
                self.by_obs.setdefault(k, []).append(i)

    @classmethod
    def from_sentences(cls, texts: list[str]) -> SentenceBank:
        """Label and filter sentences: labeler-uncertain ones, blacklisted words and >20 words go."""
        seen: set[str] = set()
        kept: list[Sentence] = []
        for text in texts:
            text = re.sub(r"\s+([.,;!?])", r"\1", " ".join(text.split()))
            norm = text.lower()
            if norm in seen or not 2 <= len(norm.split()) <= 20:
                continue
            seen.add(norm)
            sig = _signature(text)
            if not reads_as_prose(text, states_finding=any(v == 1 for _, v in sig)):
                continue
            if any(v == -1 for _, v in sig):
                continue
            if _BLACKLIST.search(_DISTRACTOR_OK.sub("", norm) if not sig else norm):
                continue
            kept.append(Sentence(text, norm.replace("-", " "), sig))
        return cls(kept)

    @classmethod
    def from_annotation(cls, path: str | Path, split: str) -> SentenceBank:
        """Bank of the report sentences of one split of an R2Gen ``annotation.json`` (cached per file)."""
        p = Path(path).resolve()
        if not p.is_file():
            raise FileNotFoundError(f"corpus annotation file not found: {p}")
        return _annotation_bank(str(p), split, p.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _annotation_bank(path: str, split: str, mtime_ns: int) -> SentenceBank:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if split not in data:
        raise ValueError(f"corpus {path} has no split {split!r} (splits: {', '.join(data)})")
    texts = [s for entry in data[split] for s in split_report(str(entry.get("report", "")))]
    return SentenceBank.from_sentences(texts)


@lru_cache(maxsize=1)
def fallback_bank() -> SentenceBank:
    """Bank of the built-in sentences of ``fallback_sentences.txt`` ("{side}" expanded)."""
    texts: list[str] = []
    for line in FALLBACK_PATH.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{side}" in line or "{Side}" in line:
            for side in ("right", "left"):
                texts.append(line.replace("{side}", side).replace("{Side}", side.capitalize()))
        else:
            texts.append(line)
    return SentenceBank.from_sentences(texts)


@dataclass(frozen=True)
class Item:
    """One thing the report must say: a positive observation (or None for a plain statement) and
    the words its sentence must contain (each pattern) and must not contain."""

    observation: str | None
    require: tuple[str, ...]
    forbid: tuple[str, ...] = ()
    section: int = 1

    def accepts(self, s: Sentence) -> bool:
        """Whether the sentence's words fit this item."""
        return all(re.search(p, s.norm) for p in self.require) and not any(
            re.search(p, s.norm) for p in self.forbid
        )


def _side_zone(side: str, zone: str | None) -> tuple[list[str], list[str]]:
    req, forb = [_SIDE[side][0]], [_SIDE[side][1]]
    if zone is not None:
        if zone == "middle" and side == "left":
            req[0] = r"\b(?:left|lingula\w*)\b"
        req.append(_ZONE[zone][0])
        forb.append(_ZONE[zone][1])
    return req, forb


def _grade(name: str) -> tuple[str, str]:
    others = "|".join(p for k, p in _GRADE.items() if k != name)
    return _GRADE[name], others


def finding_items(case: Case) -> list[Item]:
    """The statements a report of this case must make, one per finding (device, lesion, ...)."""
    f = case.findings
    items: list[Item] = []
    if f.cardiomegaly:
        g = "mild" if f.ctr < 0.62 else "moderate" if f.ctr < 0.66 else "marked"
        req, forb = _grade(g)
        items.append(Item("Cardiomegaly", (req,), (forb, r"\b(?:right|left)\b"), 0))
    if f.mediastinal_widening:
        items.append(Item("Enlarged Cardiomediastinum", (r"mediastin",), (r"\b(?:right|left)\b",), 0))
    names = {"consolidation": "Consolidation", "opacity": "Lung Opacity", "pneumonia": "Pneumonia"}
    for op in f.opacities:
        req, forb = _side_zone(op.side, op.zone)
        forb.append(r"\b(?:multifocal|diffuse|nodul\w*|mass)\b")
        items.append(Item(names[op.kind], tuple(req), tuple(forb)))
    for les in f.lesions:
        req, forb = _side_zone(les.side, les.zone)
        if les.is_mass:
            req.append(r"\bmass\b")
            forb.append(r"\b(?:nodul\w*|masses)\b")
        else:
            req.append(r"\bnodule\b")
            forb.append(r"\b(?:mass|masses|nodules|multiple)\b")
        items.append(Item("Lung Lesion", tuple(req), tuple(forb)))
    if f.edema:
        mild, heavy = r"\b(?:mild|interstitial|kerley|congestion)\b", r"\b(?:moderate|severe|alveolar)\b"
        req_e, forb_e = (mild, heavy) if f.edema == 1 else (heavy, mild)
        items.append(Item("Edema", (req_e,), (forb_e, r"\b(?:right|left)\b")))
    for atl in f.atelectasis:
        req, forb = _side_zone(atl.side, None)
        req.append(r"\b(?:base|basilar|basal|lower|plate|subsegmental|discoid|linear)\b")
        forb.append(r"\b(?:upper|middle|lingula\w*|collapse|lobar)\b")
        items.append(Item("Atelectasis", tuple(req), tuple(forb)))
    if f.hyperinflation:
        items.append(Item(None, (r"\b(?:hyperexpan\w*|hyperinflat\w*)\b",), (), 1))
    if f.pneumothorax is not None:
        req, forb = _side_zone(f.pneumothorax.side, None)
        size = f.pneumothorax.size
        g_req, g_forb = _grade("mild" if size < 0.28 else "moderate" if size < 0.36 else "marked")
        items.append(Item("Pneumothorax", (*req, g_req), (*forb, g_forb), 2))
    lat = f.effusion_laterality
    if lat is not None:
        req, forb = _side_zone(lat, None)
        grade = max(e.grade for e in f.effusions)
        g_req, g_forb = _grade(("mild", "moderate", "marked")[grade - 1])
        items.append(Item("Pleural Effusion", (*req, g_req), (*forb, g_forb), 2))
    if f.pleural_thickening is not None:
        req, forb = _side_zone(f.pleural_thickening, None)
        items.append(Item("Pleural Other", (*req, r"thicken"), tuple(forb), 2))
    if f.fracture is not None:
        req, forb = _side_zone(f.fracture.side, None)
        forb.append(r"\b(?:ribs|fractures|multiple|clavicle|compression)\b")
        items.append(Item("Fracture", (*req, r"\brib\b"), tuple(forb), 3))
    if f.scoliosis:
        items.append(Item(None, (r"\bscoliosis\b",), (), 3))
    # the renderer draws the pacemaker on the left chest and the central line from the right neck
    wrong_side = {"pacemaker": r"\bright (?:chest|subclavian|sided|pectoral)\b", "central_line": r"\bleft\b"}
    for name, pattern in _DEVICES.items():
        if getattr(f.devices, name):
            forbid = [p for k, p in _DEVICES.items() if k != name] + [r"\b(?:removal|removed)\b"]
            if name in wrong_side:
                forbid.append(wrong_side[name])
            items.append(Item("Support Devices", (pattern,), tuple(forbid), 4))
    return items


# The statement of a case with nothing to state: a normal line naming no observation.
NORMAL_ITEM = Item(None, (r"\bno acute\b|\bpulmonary vascularity\b.*\bnormal\b",), (r"\bbone|\boss",), 1)


# Statements of normal lung volumes, which contradict a hyperinflated case ("Lungs are hyperexpanded.
# The lungs are normally inflated and clear."): 55 of 1456 such reports of a 20000-study set had both.
_NORMAL_VOLUME = re.compile(
    r"\b(?:normally|well) ?(?:inflated|expanded|aerated)\b"
    r"|\bnormal (?:lung )?(?:volumes?|inflation|expansion)\b|\blung volumes are (?:normal|within normal)"
)


def _avoid(case: Case) -> re.Pattern[str] | None:
    """Words no sentence of this case's report may use, because they contradict a finding."""
    return _NORMAL_VOLUME if case.findings.hyperinflation else None


def _candidates(
    bank: SentenceBank,
    item: Item,
    target: dict[str, int],
    covered: set[str],
    avoid: re.Pattern[str] | None = None,
) -> list[Sentence]:
    """Sentences that state ``item`` and otherwise only not-yet-covered negatives of ``target``,
    none matching ``avoid``."""
    pool = bank.by_obs.get(item.observation or "", [])
    out = []
    for i in pool:
        s = bank.sentences[i]
        if avoid is not None and avoid.search(s.norm):
            continue
        sig = s.labels
        if item.observation is None:
            ok = not sig
        else:
            ok = sig.get(item.observation) == 1 and all(
                v == 0 and target.get(k) == 0 and k not in covered
                for k, v in sig.items()
                if k != item.observation
            )
        if ok and item.accepts(s):
            out.append(s)
    return out


# Statements that call a whole section normal; not used when that section has a finding.
_SECTION_NORMAL = {
    0: re.compile(r"\b(?:heart and mediastinum|cardiomediastinal)\b"),
    1: re.compile(r"\b(?:lungs?|lung fields?)\b[^.]*\b(?:clear|normal|unremarkable)\b|\bclear lungs?\b"),
    2: re.compile(r"\bpleural spaces?\b"),
}


def _negative_candidates(
    bank: SentenceBank,
    key: str,
    remaining: set[str],
    abnormal_sections: set[int],
    avoid: re.Pattern[str] | None = None,
) -> list[Sentence]:
    """Sentences negating ``key`` whose every observation is a remaining negative, with no side
    words, no whole-section normal statement for a section that has a finding and nothing matching
    ``avoid``."""
    out = []
    for i in bank.by_obs.get(key, []):
        s = bank.sentences[i]
        if avoid is not None and avoid.search(s.norm):
            continue
        if not all(v == 0 and k in remaining for k, v in s.signature):
            continue
        if re.search(r"\b(?:right|left)\b", s.norm):
            continue
        if any(_SECTION_NORMAL[sec].search(s.norm) for sec in abnormal_sections if sec in _SECTION_NORMAL):
            continue
        out.append(s)
    return out


def _from_banks(
    banks: list[SentenceBank], find: Callable[[SentenceBank], list[Sentence]], missing: str
) -> list[Sentence]:
    """The candidates ``find`` gives in the first bank that has any (the corpus before the built-in
    sentences); ``LookupError(missing)`` when none has."""
    for bank in banks:
        cands = find(bank)
        if cands:
            return cands
    raise LookupError(missing)


def _compose_once(case: Case, banks: list[SentenceBank], rng: np.random.Generator) -> str:
    target = {k: v for k, v in case.labels.items() if v is not None and k != "No Finding"}
    picked: list[tuple[tuple[int, int, int], Sentence]] = []
    covered: set[str] = set()
    avoid = _avoid(case)
    for n, item in enumerate(finding_items(case)):
        cands = _from_banks(
            banks,
            partial(_candidates, item=item, target=target, covered=covered, avoid=avoid),
            f"no sentence states {item.observation or item.require}",
        )
        s = cands[int(rng.integers(len(cands)))]
        covered.update(k for k, _ in s.signature)
        picked.append(((item.section, 0, n), s))
    remaining = {k for k, v in target.items() if v == 0 and k not in covered}
    abnormal = {SECTION[k] for k, v in target.items() if v == 1}
    n = 0
    while remaining:
        key = min(remaining, key=ORDER.index)
        cands = _from_banks(
            banks,
            partial(
                _negative_candidates, key=key, remaining=remaining, abnormal_sections=abnormal, avoid=avoid
            ),
            f"no sentence states the absence of {key}",
        )
        s = cands[int(rng.integers(len(cands)))]
        remaining -= {k for k, _ in s.signature}
        picked.append(((min(SECTION[k] for k, _ in s.signature), 1, n), s))
        n += 1
    if not picked:
        # nothing present and no absence drawn (about 1 case in 20000): one plain normal line, since
        # an empty report labels as nothing at all, not as "No Finding"
        cands = _from_banks(
            banks,
            partial(_candidates, item=NORMAL_ITEM, target=target, covered=covered, avoid=avoid),
            "no sentence states a normal study",
        )
        picked.append(((NORMAL_ITEM.section, 0, 0), cands[int(rng.integers(len(cands)))]))
    picked.sort(key=lambda t: t[0])
    return " ".join(s.text for _, s in picked)


def compose_report(case: Case, corpus: SentenceBank | None, rng: np.random.Generator) -> str:
    """A findings report for ``case`` whose labels (``label_report``) equal ``case.labels``.

    ``corpus``: a :class:`SentenceBank` (e.g. ``SentenceBank.from_annotation(path, "train")``) or
    None for the built-in sentences only; the built-in sentences also fill gaps in the corpus.
    Raises ``RuntimeError`` if no agreeing report can be composed (a bug, never expected).
    """
    banks = [b for b in (corpus, fallback_bank()) if b is not None]
    labels = case.labels
    for attempt in range(6):
        use = banks if attempt < 4 else banks[-1:]
        report = _compose_once(case, use, rng)
        if label_report(report) == labels:
            return report
    raise RuntimeError(f"could not compose a report agreeing with labels {labels}: last {report!r}")
