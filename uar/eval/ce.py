"""Clinical efficacy (CE): precision / recall / F1 of observation labels.

Generated reports are labeled with our rule-based labeler (:mod:`uar.eval.labeler`) and compared
with labels of the reference reports (labeled the same way) or with ground-truth ``labels`` objects
that a dataset carries. As in R2Gen's ``compute_ce.py``, each of the 14 observations is a binary
task "positive (1) vs not": uncertain (-1), negative (0) and not mentioned (None) all count as not
positive.

* micro P/R/F1: true / false positives and false negatives summed over the 14 observations;
* macro P/R/F1: the mean over the 14 observations of the per-observation scores, an undefined ratio
  (0 / 0) counting as 0 (scikit-learn's ``zero_division=0``);
* the same over the five CheXpert competition observations (:data:`CHEXPERT_5`) on request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from uar.eval.labeler import OBSERVATIONS, label_report

Labels = Mapping[str, int | None]

# The five observations of the CheXpert competition, often reported as "CE (5)".
CHEXPERT_5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of one binary task, with its counts."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        """Number of positive references (tp + fn)."""
        return self.tp + self.fn


@dataclass(frozen=True)
class CEResult:
    """CE scores: micro, macro and one :class:`PRF` per observation (CheXpert order)."""

    micro: PRF
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_observation: dict[str, PRF]

    def to_dict(self, prefix: str = "ce") -> dict[str, Any]:
        """Flat JSON: ``{prefix}_micro_precision`` .. ``{prefix}_macro_f1``, ``{prefix}_per_observation``.

        Per observation: precision, recall, f1, tp, fp, fn and support (positive references).
        """
        return {
            f"{prefix}_micro_precision": self.micro.precision,
            f"{prefix}_micro_recall": self.micro.recall,
            f"{prefix}_micro_f1": self.micro.f1,
            f"{prefix}_macro_precision": self.macro_precision,
            f"{prefix}_macro_recall": self.macro_recall,
            f"{prefix}_macro_f1": self.macro_f1,
            f"{prefix}_per_observation": {
                obs: {**asdict(s), "support": s.support} for obs, s in self.per_observation.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], prefix: str = "ce") -> CEResult:
        """Inverse of :meth:`to_dict` (e.g. to print the table of a result JSON)."""
        fields = ("precision", "recall", "f1", "tp", "fp", "fn")
        per = {obs: PRF(**{k: v[k] for k in fields}) for obs, v in d[f"{prefix}_per_observation"].items()}
        micro = prf(
            sum(s.tp for s in per.values()), sum(s.fp for s in per.values()), sum(s.fn for s in per.values())
        )
        return cls(
            micro=micro,
            macro_precision=d[f"{prefix}_macro_precision"],
            macro_recall=d[f"{prefix}_macro_recall"],
            macro_f1=d[f"{prefix}_macro_f1"],
            per_observation=per,
        )


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def prf(tp: int, fp: int, fn: int) -> PRF:
    """Precision tp/(tp+fp), recall tp/(tp+fn), F1 their harmonic mean; 0/0 counts as 0."""
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return PRF(p, r, f1, tp, fp, fn)


def check_labels(labels: Labels) -> None:
    """Raise ``ValueError`` if a labels object has unknown keys or values outside 1 / 0 / -1 / None."""
    unknown = set(labels) - set(OBSERVATIONS)
    if unknown:
        raise ValueError(f"unknown observations in labels: {sorted(unknown)}")
    bad = {k: v for k, v in labels.items() if v not in (1, 0, -1, None)}
    if bad:
        raise ValueError(f"label values must be 1, 0, -1 or null, got {bad}")


def ce_scores(
    predicted: Sequence[Labels], reference: Sequence[Labels], observations: Sequence[str] = OBSERVATIONS
) -> CEResult:
    """CE of ``predicted`` labels against ``reference`` labels, study by study.

    ``observations``: the tasks averaged over (default all 14; :data:`CHEXPERT_5` for the five
    competition observations). A missing key counts as None (not positive). Raises ``ValueError`` on
    length mismatch or invalid labels.
    """
    unknown = set(observations) - set(OBSERVATIONS)
    if unknown or not observations:
        raise ValueError(f"observations must be a non-empty subset of OBSERVATIONS, got {list(observations)}")
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted but {len(reference)} reference label sets")
    for labels in (*predicted, *reference):
        check_labels(labels)
    per: dict[str, PRF] = {}
    for obs in observations:
        tp = fp = fn = 0
        for p, r in zip(predicted, reference, strict=True):
            pos_p, pos_r = p.get(obs) == 1, r.get(obs) == 1
            tp += pos_p and pos_r
            fp += pos_p and not pos_r
            fn += pos_r and not pos_p
        per[obs] = prf(tp, fp, fn)
    micro = prf(
        sum(s.tp for s in per.values()), sum(s.fp for s in per.values()), sum(s.fn for s in per.values())
    )
    n = len(per)
    return CEResult(
        micro=micro,
        macro_precision=sum(s.precision for s in per.values()) / n,
        macro_recall=sum(s.recall for s in per.values()) / n,
        macro_f1=sum(s.f1 for s in per.values()) / n,
        per_observation=per,
    )


def ce_from_reports(generated: Sequence[str], references: Sequence[str]) -> CEResult:
    """Label both report lists with :func:`~uar.eval.labeler.label_report` and score them."""
    return ce_scores([label_report(t) for t in generated], [label_report(t) for t in references])


def ce_table(result: CEResult) -> str:
    """Markdown table: one row per observation (P, R, F1, positives predicted, positives in reference)."""
    lines = [
        "| Observation | P | R | F1 | predicted + | reference + |",
        "|---|---|---|---|---|---|",
    ]
    for obs, s in result.per_observation.items():
        lines.append(
            f"| {obs} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.tp + s.fp} | {s.support} |"
        )
    m = result.micro
    lines.append(
        f"| **micro** | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {m.tp + m.fp} | {m.support} |"
    )
    lines.append(
        f"| **macro** | {result.macro_precision:.3f} | {result.macro_recall:.3f} | "
        f"{result.macro_f1:.3f} | | |"
    )
    return "\n".join(lines)
