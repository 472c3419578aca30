"""The pointing game: does a sentence's grounding map point at the finding it names?

For every generated sentence that names a localised finding (the labeler reads it as present) which
the synthetic case really has, the map's maximum on the frontal view is a *hit* when it falls inside
one of the boxes where the renderer drew that finding (:func:`uar.synthetic.regions.finding_regions`).
Two baselines are scored on the same (sentence, finding) pairs: the image centre, and a uniformly
random point, whose hit rate is the expected one (the share of the image the finding's boxes cover).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from uar.data.images import load_image
from uar.eval.labeler import label_sentence
from uar.generator import ReportGenerator, readable_findings
from uar.grounding import (
    DEFAULT_SMOOTHING,
    SMOOTHING_CHOICES,
    Head,
    Rule,
    SentenceMap,
    combine,
    sentence_spans,
)
from uar.synthetic.case import Case, Region
from uar.synthetic.regions import finding_regions
from uar.synthetic.sampling import sample_case

# what the issue calls localised: effusion, pneumothorax, opacity / consolidation, lesion, atelectasis,
# fracture, device (CheXpert observation names of uar.eval.labeler)
LOCALISED: tuple[str, ...] = (
    "Pleural Effusion",
    "Pneumothorax",
    "Lung Opacity",
    "Consolidation",
    "Pneumonia",
    "Lung Lesion",
    "Atelectasis",
    "Fracture",
    "Support Devices",
)


STUDY_ID = re.compile(r"^syn(\d+)_(\d+)$")


@dataclass(frozen=True)
class Trial:
    """One (sentence, finding) pair of the game."""

    observation: str
    hit: bool  # the map's maximum inside one of the finding's boxes
    centre_hit: bool  # the image centre inside one of them
    random_hit: float  # share of the image inside them (expected hit rate of a random point)


def _inside(col: float, row: float, box: tuple[int, int, int, int]) -> bool:
    left, top, right, bottom = box
    return left - 0.5 <= col < right - 0.5 and top - 0.5 <= row < bottom - 0.5


def _coverage(boxes: Sequence[tuple[int, int, int, int]], size: int) -> float:
    mask = np.zeros((size, size), dtype=bool)
    for left, top, right, bottom in boxes:
        mask[top:bottom, left:right] = True
    return float(mask.mean())


@lru_cache(maxsize=4096)
def named_findings(sentence: str) -> tuple[str, ...]:
    """The localised findings a sentence names as present (the labeler; generated sentences repeat,
    so results are cached)."""
    return tuple(o for o, v in label_sentence(sentence).items() if v == 1 and o in LOCALISED)


def trials(maps: Iterable[SentenceMap], regions: Sequence[Region], view: int = 0) -> list[Trial]:
    """The trials of one report: its sentence maps against the case's regions on ``view``.

    Pixel coordinates follow :class:`Region`: (column, row), origin at the top-left pixel's centre;
    a map's peak is its highest pixel on a ``size`` x ``size`` view (image fractions, placed at
    ``fraction * size - 0.5``).
    """
    out: list[Trial] = []
    for m in maps:
        for observation in named_findings(m.sentence):
            boxes = [r.box for r in regions if r.observation == observation]
            if not boxes:
                continue  # the sentence names a finding the case does not have: not a trial
            size = regions[0].image_size
            fx, fy = m.peak(view, (size, size))
            col, row = fx * size - 0.5, fy * size - 0.5
            centre = (size - 1) / 2
            out.append(
                Trial(
                    observation=observation,
                    hit=any(_inside(col, row, b) for b in boxes),
                    centre_hit=any(_inside(centre, centre, b) for b in boxes),
                    random_hit=_coverage(boxes, size),
                )
            )
    return out


@dataclass
class Score:
    """Hit rates of the map, the centre and a random point over some trials."""

    n: int = 0
    hits: int = 0
    centre: int = 0
    random: float = 0.0
    per_observation: dict[str, Score] = field(default_factory=dict)

    def add(self, t: Trial) -> None:
        """Count one trial (also in its observation's score)."""
        for s in (self, self.per_observation.setdefault(t.observation, Score())):
            s.n += 1
            s.hits += t.hit
            s.centre += t.centre_hit
            s.random += t.random_hit

    def rates(self) -> dict[str, float | int]:
        """``n`` and the hit rates ``map``, ``centre``, ``random`` (0 when there are no trials)."""
        n = max(self.n, 1)
        return {"n": self.n, "map": self.hits / n, "centre": self.centre / n, "random": self.random / n}


def score(all_trials: Iterable[Trial]) -> Score:
    """The :class:`Score` of trials."""
    s = Score()
    for t in all_trials:
        s.add(t)
    return s


def case_of(entry: dict[str, Any]) -> Case:
    """Re-draw the case of a synthetic study (``uar data synthetic``) from its id ``syn<seed>_<index>``;
    raises ``ValueError`` when the id is not synthetic or the case does not match the stored labels."""
    m = STUDY_ID.match(str(entry.get("id", "")))
    if m is None:
        raise ValueError(f"{entry.get('id')!r} is not a synthetic study id (syn<seed>_<index>)")
    case = sample_case(np.random.default_rng([int(m.group(1)), int(m.group(2))]))
    if case.labels != entry.get("labels"):
        raise ValueError(f"study {entry['id']}: the re-drawn case does not match the stored labels")
    return case


@dataclass
class Looked:
    """One generated report of a synthetic study and where its decoder looked."""

    study_id: str
    frontal: np.ndarray  # (H, W) in [0, 1], the frontal view as the model read it
    attention: Tensor  # (layers, H, T, L) cross-attention over the report
    spans: list[tuple[int, int]]  # sentence word spans
    sentences: list[str]  # readable sentence of each span ("" when the prose rules drop it)
    regions: tuple[Region, ...]  # the case's regions on the frontal view
    n_views: int  # views the model reads (the attention's L is n_views grids)

    def maps(
        self, rule: Rule, heads: Sequence[Head] | None = None, smoothing: float = DEFAULT_SMOOTHING
    ) -> list[SentenceMap]:
        """The sentence maps under ``rule`` (``heads`` for the heads rule), spread by ``smoothing``."""
        grids = combine(self.attention, self.spans, self.n_views, rule, heads)
        return [
            SentenceMap(t, span, g, smoothing)
            for t, span, g in zip(self.sentences, self.spans, grids, strict=True)
            if t
        ]


def look(
    gen: ReportGenerator,
    data: str | Path,
    split: str,
    *,
    max_studies: int | None = None,
    beam_size: int = 3,
    batch: int = 8,
) -> list[Looked]:
    """Generate the reports of ``split`` of the synthetic set ``data`` and read their cross-attention."""
    root = Path(data)
    entries = json.loads((root / "annotation.json").read_text(encoding="utf-8"))[split][:max_studies]
    period = gen.text_tokenizer.word_id(".")
    out: list[Looked] = []
    for start in tqdm(range(0, len(entries), batch), desc=f"grounding ({split})", unit="batch"):
        chunk = entries[start : start + batch]
        studies = [tuple(load_image(root / "images" / p) for p in e["image_path"]) for e in chunk]
        visual = gen.visual_input(studies)
        reports = gen.generate_batch(studies, beam_size=beam_size)
        for k, (entry, report) in enumerate(zip(chunk, reports, strict=True)):
            ids = report.token_ids
            if report.withheld or not ids:
                continue
            with torch.inference_mode():
                attention = gen.model.cross_attention(visual[k : k + 1], torch.tensor([[0, *ids]]))[0]
            spans = sentence_spans(ids, period)
            sentences = [readable_findings(gen.text_tokenizer.decode(ids[s:e])) for s, e in spans]
            size = studies[k][0].shape[0]
            regions = finding_regions(case_of(entry), "frontal", size=size)
            n_views = gen.config.n_views
            out.append(Looked(entry["id"], studies[k][0], attention, spans, sentences, regions, n_views))
    return out


def play(
    looked: Iterable[Looked],
    rule: Rule,
    heads: Sequence[Head] | None = None,
    smoothing: float = DEFAULT_SMOOTHING,
) -> Score:
    """The pointing-game :class:`Score` of ``rule`` (maps spread by ``smoothing``) over generated reports."""
    return score(t for item in looked for t in trials(item.maps(rule, heads, smoothing), item.regions))


def select_heads(
    looked: Sequence[Looked], max_heads: int = 4, smoothing: float = DEFAULT_SMOOTHING
) -> tuple[list[Head], float]:
    """Greedy choice of decoder heads on validation reports: the best single head, then the head
    whose addition raises the overall hit rate most, while it rises (at most ``max_heads``).
    Returns the heads and their hit rate (maps spread by ``smoothing``)."""
    if not looked:
        raise ValueError("no generated reports to choose grounding heads on")
    n_layers, n_heads = looked[0].attention.shape[:2]
    candidates = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    chosen: list[Head] = []
    best = -1.0
    while len(chosen) < max_heads:
        rates = {
            c: play(looked, "heads", [*chosen, c], smoothing).rates()["map"]
            for c in candidates
            if c not in chosen
        }
        if not rates:
            break
        c, rate = max(rates.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        if rate <= best:
            break
        chosen.append(c)
        best = float(rate)
    return chosen, best


def select_grounding(
    looked: Sequence[Looked], choices: Sequence[float] = SMOOTHING_CHOICES, max_heads: int = 4
) -> tuple[list[Head], float, float]:
    """Heads (:func:`select_heads`) and map smoothing chosen together on validation reports: for each
    smoothing of ``choices`` its greedy heads; the pair with the highest hit rate wins, the narrower
    smoothing on a tie. Returns (heads, smoothing, hit rate)."""
    if not choices:
        raise ValueError("no smoothing widths to choose from")
    ordered = sorted(choices)
    heads, rate = select_heads(looked, max_heads, ordered[0])
    best = (heads, ordered[0], rate)
    for smoothing in ordered[1:]:
        heads, rate = select_heads(looked, max_heads, smoothing)
        if rate > best[2]:
            best = (heads, smoothing, rate)
    return best
