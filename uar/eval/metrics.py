"""Corpus-level report-generation metrics through pycocoevalcap 1.2 (the COCO caption code).

BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr(-D), one reference per study, exactly the scorers R2Gen's
``modules/metrics.py`` uses (plus CIDEr, which UAR adds). As in R2Gen no PTB tokenizer runs: the
texts are expected already cleaned (lower-case, punctuation split off, e.g. by
``TextTokenizer.clean``), and tokens are whitespace-separated.

METEOR is the official Java jar shipped inside the pycocoevalcap wheel; it needs a ``java``
executable (Java 8+, Java 17 tested). pycocoevalcap's ``Meteor`` wrapper has quirks handled here:

* it starts ``java`` in ``__init__`` and only stops it in ``__del__``: we shut the process down
  explicitly (stdin closed, process reaped) in a ``finally`` block;
* it speaks a line protocol (``SCORE ||| ref ||| hyp``), so new lines or ``|||`` inside a text would
  desynchronise it: both are replaced by spaces before scoring;
* a missing ``java`` surfaces as an obscure ``FileNotFoundError`` from ``Popen``: we check first and
  raise :class:`MeteorUnavailableError` with the fix.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
from collections.abc import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

METRIC_KEYS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")


class MeteorUnavailableError(RuntimeError):
    """METEOR cannot run because no Java runtime is installed."""


def _sanitise(text: str) -> str:
    """One line, no METEOR field separator, single spaces."""
    text = text.replace("|||", " ")
    return re.sub(r"\s+", " ", text).strip()


def meteor_score(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """Corpus METEOR 1.5 (``-l en -norm``) from pycocoevalcap's jar; the Java process is always stopped.

    ``gts`` / ``res`` map a study index to its reference list / one-hypothesis list.
    Raises :class:`MeteorUnavailableError` when ``java`` is not on ``PATH``.
    """
    if shutil.which("java") is None:
        raise MeteorUnavailableError(
            "METEOR needs a Java runtime (java on PATH), e.g. `apt-get install default-jre-headless`; "
            "pass meteor=False to skip it"
        )
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        proc = scorer.meteor_p
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return float(score)


def nlg_metrics(refs: Sequence[str], hyps: Sequence[str], *, meteor: bool = True) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of ``hyps`` against ``refs`` (one reference per study).

    Scores are corpus level as pycocoevalcap computes them: BLEU with the "closest" reference length
    and a corpus brevity penalty; METEOR the jar's aggregate score; ROUGE-L (beta 1.2) and CIDEr-D
    (n = 1..4, sigma 6, document frequencies from ``refs``) as the mean over studies. All values are
    in [0, 1] except CIDEr in [0, 10]. With ``meteor=False`` the ``meteor`` key is absent.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no studies to score")
    gts = {i: [_sanitise(r)] for i, r in enumerate(refs)}
    res = {i: [_sanitise(h)] for i, h in enumerate(hyps)}
    with contextlib.redirect_stdout(io.StringIO()):  # BleuScorer prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    if meteor:
        out["meteor"] = meteor_score(gts, res)
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    out["cider"] = float(Cider().compute_score(gts, res)[0])
    return out
