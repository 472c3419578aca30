"""Offline evaluation of a UAR checkpoint on an R2Gen-format split (see docs/evaluation.md).

:func:`evaluate_checkpoint` generates the report of every study of the split with beam search and
computes:

* NLG metrics (:func:`uar.eval.metrics.nlg_metrics`) against the cleaned reference reports, or, with
  ``r2gen_references=True``, against R2Gen's references rebuilt through the truncated vocabulary
  (``decode(encode(report))``: out-of-vocabulary words become ``<unk>``, long reports are cut);
* CE (:mod:`uar.eval.ce`) of the generated reports' labels against the labels of the reference
  reports (both from our rule-based labeler), and against the dataset's ground-truth ``labels``
  objects when every study carries one (``ce_gt_*``);
* image→report retrieval (:mod:`uar.eval.retrieval`) from ``UAR.align_features``;
* sanity figures: share of exactly duplicated generated reports, mean lengths, share of ``<unk>``.

:func:`markdown_table` prints runs beside the paper's reference rows (uar-paper.md Table 1).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from uar.checkpoint import Checkpoint, load_checkpoint
from uar.data.r2gen import R2GenDataset
from uar.eval.ce import CHEXPERT_5, ce_scores
from uar.eval.labeler import label_report
from uar.eval.metrics import nlg_metrics
from uar.eval.retrieval import retrieval_metrics
from uar.generation import beam_search, greedy
from uar.generator import ReportGenerator
from uar.text.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

UNK_ID = 1

# uar-paper.md §5.2 Table 1 (None = not reported). Keys as in the result JSON.
PAPER_ROWS: dict[str, dict[str, dict[str, float | None]]] = {
    "iu_xray": {
        "UAR (paper)": dict(
            bleu_1=0.530, bleu_2=0.365, bleu_3=0.263, bleu_4=0.200, meteor=0.218, rouge_l=0.405, cider=0.501
        ),
        "R2Gen (paper)": dict(
            bleu_1=0.470, bleu_2=0.304, bleu_3=0.219, bleu_4=0.165, meteor=None, rouge_l=0.371, cider=None
        ),
        "R2GenCMN* (paper)": dict(
            bleu_1=0.470, bleu_2=0.304, bleu_3=0.222, bleu_4=0.170, meteor=0.191, rouge_l=0.358, cider=0.344
        ),
    },
    "mimic_cxr": {
        "UAR (paper)": dict(
            bleu_1=0.363, bleu_2=0.229, bleu_3=0.158, bleu_4=0.107, meteor=0.157, rouge_l=0.289, cider=None
        ),
        "R2Gen (paper)": dict(
            bleu_1=0.353, bleu_2=0.218, bleu_3=0.145, bleu_4=0.103, meteor=0.142, rouge_l=0.270, cider=None
        ),
        "R2GenCMN* (paper)": dict(
            bleu_1=0.348, bleu_2=0.206, bleu_3=0.135, bleu_4=0.094, meteor=0.136, rouge_l=0.266, cider=0.158
        ),
    },
}
# uar-paper.md §5.3 Table 2 (IU-Xray module ablation): reference rows of the --compare table.
PAPER_ABLATION_ROWS: dict[str, dict[str, float | None]] = {
    "Base (paper T2)": dict(
        bleu_1=0.424, bleu_2=0.268, bleu_3=0.189, bleu_4=0.144, meteor=0.171, rouge_l=0.339, cider=0.271
    ),
    "UAR (paper T2)": PAPER_ROWS["iu_xray"]["UAR (paper)"],
}
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bleu_1", "B-1"),
    ("bleu_2", "B-2"),
    ("bleu_3", "B-3"),
    ("bleu_4", "B-4"),
    ("meteor", "METEOR"),
    ("rouge_l", "ROUGE-L"),
    ("cider", "CIDEr"),
    ("ce_micro_f1", "CE-F1 micro"),
    ("ce_macro_f1", "CE-F1 macro"),
    ("retrieval_r1", "R@1"),
)


def checkpoint_dataset(ckpt: Checkpoint) -> str:
    """``"iu_xray"`` or ``"mimic_cxr"``: from the training config, else the text tokenizer's cleaning."""
    train_cfg = ckpt.meta.get("train_config")
    if train_cfg is not None:
        return str(train_cfg.dataset)
    return str(ckpt.text_tokenizer.dataset)


def reference_text(tok: TextTokenizer, report: str, *, r2gen_references: bool) -> str:
    """The reference a hypothesis is scored against: cleaned text, or R2Gen's ``decode(encode(report))``."""
    return tok.scored(tok.decode(tok.encode(report))) if r2gen_references else tok.clean(report)


def _as_array(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A dataset image (H, W) array or (1, H, W) / (H, W) tensor -> float32 (H, W) in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    image = np.asarray(image, dtype=np.float32)
    return image[0] if image.ndim == 3 else image


def _report_ids(tok: TextTokenizer, reports: Sequence[str]) -> torch.Tensor:
    """Reports -> LongTensor (B, T+1) ``[0, w1..wn, 0, pad...]`` as ``UAR.forward`` / ``align_features``."""
    rows = [[0, *tok.encode(r), 0] for r in reports]
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def sanity_figures(
    hyp_ids: Sequence[Sequence[int]], hyps: Sequence[str], refs: Sequence[str]
) -> dict[str, float]:
    """Degeneration checks: duplicated outputs, lengths in words, ``<unk>`` and empty shares."""
    counts = Counter(hyps)
    n_tokens = sum(len(ids) for ids in hyp_ids)
    return {
        "duplicate_share": sum(c for c in counts.values() if c > 1) / len(hyps),
        "distinct_reports": len(counts),
        "mean_generated_words": float(np.mean([len(h.split()) for h in hyps])),
        "mean_reference_words": float(np.mean([len(r.split()) for r in refs])),
        "unk_share": sum(sum(1 for i in ids if i == UNK_ID) for ids in hyp_ids) / n_tokens
        if n_tokens
        else 0.0,
        "empty_share": sum(1 for h in hyps if not h.strip()) / len(hyps),
    }


@torch.no_grad()
def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    beam_size: int = 3,
    r2gen_references: bool = False,
    max_studies: int | None = None,
    batch_size: int = 16,
    meteor: bool = True,
    n_samples: int = 3,
    device: str = "cpu",
    both_references: bool = False,
) -> dict[str, Any]:
    """Generate and score every study of ``split`` of the R2Gen-format dataset at ``data``.

    Args:
        checkpoint: a ``.safetensors`` checkpoint (:func:`uar.checkpoint.load_checkpoint`).
        data: dataset root with ``annotation.json`` and the images it names.
        split: ``"train"``, ``"val"`` or ``"test"``.
        beam_size: beams of :func:`uar.generation.beam_search` (1 = greedy).
        r2gen_references: score against ``decode(encode(report))`` as R2Gen did (see module doc).
        max_studies: evaluate only the first N studies (quick runs).
        batch_size: studies per generation batch.
        meteor: run the METEOR jar (needs Java).
        n_samples: how many (generated, reference) pairs to keep in the result for inspection.
        device: torch device for generation and alignment features ("cpu", "cuda", ...).
        both_references: also score the same generations against the other reference kind, under
            ``"nlg_r2gen_references"`` or ``"nlg_cleaned_references"``.

    Returns the result dict (keys documented in docs/evaluation.md).
    """
    ckpt = load_checkpoint(checkpoint)
    gen = ReportGenerator(ckpt)
    tok, cfg, model = ckpt.text_tokenizer, ckpt.cfg, ckpt.model.to(device)
    dataset = R2GenDataset(data, split, tok, n_views=cfg.n_views, image_size=cfg.image_size, train=False)
    n = len(dataset) if max_studies is None else min(len(dataset), max_studies)
    if n == 0:
        raise ValueError(f"split {split!r} of {data} has no studies")

    hyp_ids: list[list[int]] = []
    raw_refs: list[str] = []
    gt_labels: list[Mapping[str, int | None] | None] = []
    img_vecs: list[torch.Tensor] = []
    rep_vecs: list[torch.Tensor] = []
    for start in tqdm(range(0, n, batch_size), desc="evaluate", unit="batch", disable=None):
        studies = [dataset[i] for i in range(start, min(n, start + batch_size))]
        views = [[_as_array(img) for img in s.images] for s in studies]
        visual = gen.visual_input([(v[0], v[1] if len(v) > 1 else None) for v in views]).to(device)
        if beam_size == 1:
            hyp_ids.extend(greedy(model, visual))
        else:
            hyp_ids.extend(beam_search(model, visual, beam_size=beam_size))
        reports = [s.report for s in studies]
        img_vec, rep_vec = model.align_features(visual, _report_ids(tok, reports).to(device))  # (B, d) each
        img_vecs.append(img_vec.cpu())
        rep_vecs.append(rep_vec.cpu())
        raw_refs.extend(reports)
        gt_labels.extend(s.labels or None for s in studies)

    hyps = [tok.scored(tok.decode(ids)) for ids in hyp_ids]  # R2Gen's form: no comma tokens
    refs = [reference_text(tok, r, r2gen_references=r2gen_references) for r in raw_refs]
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model_name": ckpt.meta["model_name"],
        "model_version": ckpt.meta["model_version"],
        "dataset": checkpoint_dataset(ckpt),
        "split": split,
        "n": n,
        "beam_size": beam_size,
        "device": str(device),
        "references": "r2gen_vocab_roundtrip" if r2gen_references else "cleaned",
    }
    result.update(nlg_metrics(refs, hyps, meteor=meteor))
    if both_references:
        other = [reference_text(tok, r, r2gen_references=not r2gen_references) for r in raw_refs]
        key = "nlg_cleaned_references" if r2gen_references else "nlg_r2gen_references"
        result[key] = nlg_metrics(other, hyps, meteor=meteor)

    hyp_labels = [label_report(h) for h in hyps]
    ref_labels = [label_report(r) for r in raw_refs]
    result.update(ce_scores(hyp_labels, ref_labels).to_dict("ce"))
    ce5 = ce_scores(hyp_labels, ref_labels, CHEXPERT_5)
    result.update({"ce5_micro_f1": ce5.micro.f1, "ce5_macro_f1": ce5.macro_f1})
    if all(g is not None for g in gt_labels):
        truth = [dict(g) for g in gt_labels if g is not None]
        result.update(ce_scores(hyp_labels, truth).to_dict("ce_gt"))
        gt5 = ce_scores(hyp_labels, truth, CHEXPERT_5)
        result.update({"ce5_gt_micro_f1": gt5.micro.f1, "ce5_gt_macro_f1": gt5.macro_f1})
        agreement = ce_scores(ref_labels, truth)
        result["labeler_ref_vs_gt_micro_f1"] = agreement.micro.f1
        result["labeler_ref_vs_gt_macro_f1"] = agreement.macro_f1

    result["retrieval"] = retrieval_metrics(torch.cat(img_vecs), torch.cat(rep_vecs))
    result["sanity"] = sanity_figures(hyp_ids, hyps, refs)
    result["samples"] = [
        {"generated": h, "reference": r} for h, r in zip(hyps[:n_samples], refs, strict=False)
    ]
    log.info("evaluated %d studies of split %s", n, split)
    return result


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _row_values(result: Mapping[str, Any]) -> list[float | None]:
    values: list[float | None] = []
    for key, _ in TABLE_COLUMNS:
        if key == "retrieval_r1":
            retrieval = result.get("retrieval")
            values.append(retrieval["recall_at_1"] if isinstance(retrieval, Mapping) else None)
        else:
            v = result.get(key)
            values.append(float(v) if isinstance(v, int | float) else None)
    return values


def markdown_table(
    runs: Sequence[tuple[str, Mapping[str, Any]]], reference_rows: Mapping[str, Mapping[str, float | None]]
) -> str:
    """Markdown table of ``runs`` (label, result dict) followed by the paper's ``reference_rows``."""
    header = "| Model | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
    for label, result in runs:
        lines.append(f"| {label} | " + " | ".join(_cell(v) for v in _row_values(result)) + " |")
    for label, row in reference_rows.items():
        lines.append(f"| {label} | " + " | ".join(_cell(v) for v in _row_values(row)) + " |")
    return "\n".join(lines)


def sanity_text(result: Mapping[str, Any]) -> str:
    """One-paragraph summary of the sanity figures of a result."""
    s = result["sanity"]
    return (
        f"sanity: {s['duplicate_share']:.1%} of generated reports are exact duplicates "
        f"({s['distinct_reports']} distinct of {result['n']}); mean length {s['mean_generated_words']:.1f} "
        f"generated vs {s['mean_reference_words']:.1f} reference words; <unk> {s['unk_share']:.2%} of "
        f"generated tokens; empty {s['empty_share']:.1%}"
    )
