"""Write a synthetic data set in the R2Gen layout (PNGs, reports, labels, optional DICOM studies).

The top of the package: :func:`write_dataset` samples each case (:mod:`uar.synthetic.sampling`),
renders both views (:mod:`uar.synthetic.render`), composes its report
(:mod:`uar.synthetic.report`) and, on request, writes its DICOM study (:mod:`uar.synthetic.dicom`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from uar.synthetic.dicom import write_study
from uar.synthetic.render import render
from uar.synthetic.report import SentenceBank, compose_report
from uar.synthetic.sampling import sample_case

SPLITS = ("train", "val", "test")


def _save_png(img: np.ndarray, path: Path) -> None:
    """8-bit greyscale PNG of a [0, 1] image."""
    Image.fromarray(np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L").save(path)


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Numbers of train / val / test cases for ``n`` cases and the given fractions (sum 1)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    return n - n_val - n_test, n_val, n_test


def write_dataset(
    out: str | Path,
    n: int,
    seed: int,
    corpus: str | Path | None = None,
    dicom: bool = False,
    *,
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2),
    size: int = 256,
    dicom_size: int = 512,
    progress: bool = True,
) -> Path:
    """Write ``n`` synthetic studies in the R2Gen layout; returns the path of ``annotation.json``.

    Layout: ``out/annotation.json`` (``{"train": [...], "val": [...], "test": [...]}``, entries with
    ``id``, ``report``, ``image_path`` = [frontal, lateral] relative to ``out/images``, ``split``,
    ``labels`` = the 14 observations), ``out/images/<id>/0.png`` (frontal) and ``1.png`` (lateral)
    at ``size`` pixels, ``out/cases.jsonl`` (every case's parameters) and, with ``dicom``,
    ``out/dicom/<id>/{frontal,lateral}.dcm`` at ``dicom_size`` pixels (:func:`write_study`).
    Case ``i`` is drawn from ``default_rng([seed, i])``: the same arguments give the same bytes.
    ``corpus`` is an R2Gen ``annotation.json`` whose split ``s`` supplies the report sentences of
    split ``s`` (None: the built-in sentences).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    banks: dict[str, SentenceBank | None] = {
        s: (SentenceBank.from_annotation(corpus, s) if corpus is not None else None) for s in SPLITS
    }
    n_train, n_val, _ = split_counts(n, splits)
    annotation: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    with open(root / "cases.jsonl", "w", encoding="utf-8") as cases_fh:
        for i in tqdm(range(n), desc="synthetic studies", unit="study", disable=None if progress else True):
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            case = sample_case(np.random.default_rng([seed, i]))
            sid = f"syn{seed}_{i:06d}"
            (root / "images" / sid).mkdir(exist_ok=True)
            for k, view in enumerate(("frontal", "lateral")):
                _save_png(render(case, view, size=size), root / "images" / sid / f"{k}.png")
            report = compose_report(case, banks[split], np.random.default_rng([seed, i, 1]))
            annotation[split].append(
                {
                    "id": sid,
                    "report": report,
                    "image_path": [f"{sid}/0.png", f"{sid}/1.png"],
                    "split": split,
                    "labels": case.labels,
                }
            )
            cases_fh.write(json.dumps({"id": sid, "case": case.to_dict()}) + "\n")
            if dicom:
                write_study(root / "dicom" / sid, case, seed, size=dicom_size)
    path = root / "annotation.json"
    path.write_text(json.dumps(annotation, indent=1), encoding="utf-8")
    return path
