"""MIMIC-CXR-JPG as published on PhysioNet, without conversion to the R2Gen format.

Layout (MIMIC-CXR-JPG 2.0.0 / 2.1.0, MIMIC-CXR 2.0.0 reports)::

    ROOT/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train/validate/test)
    ROOT/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg
    REPORTS/files/p10/p10000032/s50414267.txt   (mimic-cxr-reports; REPORTS defaults to
                                                ROOT/mimic-cxr-reports, then ROOT)

Protocol (uar-paper.md §4): official split, frontal images only (ViewPosition PA or AP), the report
target is the FINDINGS section (studies without one are skipped, as in R2Gen's annotation). Like
R2Gen, each frontal image is one item by default; ``per_study=True`` keeps one image per study (PA
before AP, then by dicom_id) so that each report is scored once. Reports can instead come from an
R2Gen-style MIMIC ``annotation.json`` (entries with ``study_id`` and the findings text in ``report``).
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uar.data.r2gen import Record, ReportDataset, VisualTokenCache, read_annotation
from uar.text.tokenizer import TextTokenizer

__all__ = ["FRONTAL_VIEWS", "MimicCxrJpgDataset", "extract_findings", "image_path", "report_path"]

log = logging.getLogger(__name__)

FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
_SPLIT_NAMES = {"train": "train", "val": "validate", "validate": "validate", "test": "test"}
# A section header: start of a line, upper-case words (and spaces, "/" or "&"), then a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&]+):", re.MULTILINE)


def extract_findings(text: str) -> str | None:
    """The FINDINGS section of a MIMIC-CXR free-text report, whitespace-normalised, or None.

    The section runs from the "FINDINGS:" header to the next upper-case header (e.g. "IMPRESSION:")
    or the end of the report.
    """
    headers = list(_HEADER.finditer(text))
    for i, h in enumerate(headers):
        if h.group(1).strip() == "FINDINGS":
            end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
            body = " ".join(text[h.end() : end].split())
            return body or None
    return None


def image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """``ROOT/files/pNN/pSUBJECT/sSTUDY/DICOM.jpg`` (NN = first two digits of the subject id)."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def report_path(reports_root: Path, subject_id: str, study_id: str) -> Path:
    """``REPORTS/files/pNN/pSUBJECT/sSTUDY.txt``."""
    return reports_root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"


def _read_csv(root: Path, name: str) -> Iterator[dict[str, str]]:
    """Rows of ``ROOT/name`` or ``ROOT/name.gz``."""
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", newline="") as f:
                yield from csv.DictReader(f)
            return
    raise FileNotFoundError(f"{name}(.gz) not found in {root}")


def _study_key(value: Any) -> str:
    """Study id as digits (accepts 50414267, "50414267" and "s50414267")."""
    return str(value).lstrip("s")


class MimicCxrJpgDataset(ReportDataset):
    """One split of MIMIC-CXR-JPG, one frontal view per item, FINDINGS as the report.

    Args:
        root: MIMIC-CXR-JPG folder (split and metadata CSVs, ``files/``).
        split: "train", "val" (= "validate") or "test".
        tokenizer, image_size, train, token_cache, seed: see :class:`uar.data.r2gen.ReportDataset`.
        reports_root: folder holding ``files/pNN/pID/sID.txt``; default ``ROOT/mimic-cxr-reports``
            if present, else ``ROOT``.
        annotation: an R2Gen-style MIMIC ``annotation.json``; its reports (by ``study_id``) replace
            the free-text files, and studies absent from it are skipped.
        per_study: one image per study instead of every frontal image.
        missing_ok: skip rows whose JPEG is absent (a partial download) instead of failing.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        tokenizer: TextTokenizer,
        image_size: int,
        train: bool,
        token_cache: VisualTokenCache | None = None,
        *,
        seed: int = 0,
        reports_root: str | Path | None = None,
        annotation: str | Path | None = None,
        per_study: bool = False,
        missing_ok: bool = False,
    ) -> None:
        root = Path(root)
        if split not in _SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected train, val or test")
        wanted = _SPLIT_NAMES[split]
        if reports_root is None:
            reports_root = root / "mimic-cxr-reports" if (root / "mimic-cxr-reports").is_dir() else root
        self.reports_root = Path(reports_root)
        in_split = {
            r["dicom_id"] for r in _read_csv(root, "mimic-cxr-2.0.0-split.csv") if r["split"] == wanted
        }
        # (subject, study) -> [(view rank, dicom_id)], frontal images of the split only
        studies: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for r in _read_csv(root, "mimic-cxr-2.0.0-metadata.csv"):
            view = r.get("ViewPosition", "").strip().upper()
            if r["dicom_id"] in in_split and view in FRONTAL_VIEWS:
                key = (r["subject_id"], _study_key(r["study_id"]))
                studies.setdefault(key, []).append((FRONTAL_VIEWS.index(view), r["dicom_id"]))
        annotated = self._annotated_reports(annotation) if annotation is not None else None
        records: list[Record] = []
        no_report = missing = 0
        for (subject, study), images in sorted(studies.items()):
            report = annotated.get(study) if annotated is not None else self._findings(subject, study)
            if not report:
                no_report += 1
                continue
            ordered = [dicom for _, dicom in sorted(images)]
            for dicom in ordered[:1] if per_study else ordered:
                path = image_path(root, subject, study, dicom)
                if not path.is_file():
                    if missing_ok:
                        missing += 1
                        continue
                    raise FileNotFoundError(f"image not found: {path}")
                records.append(Record(id=dicom, image_paths=(path,), report=report))
        log.info(
            "MIMIC-CXR-JPG %s: %d images from %d studies with frontal views; %d studies without findings, "
            "%d images missing",
            wanted,
            len(records),
            len(studies),
            no_report,
            missing,
        )
        super().__init__(records, root, tokenizer, 1, image_size, train, token_cache, seed)

    def _findings(self, subject: str, study: str) -> str | None:
        path = report_path(self.reports_root, subject, study)
        if not path.is_file():
            return None
        return extract_findings(path.read_text(errors="replace"))

    @staticmethod
    def _annotated_reports(annotation: str | Path) -> dict[str, str]:
        ann = read_annotation(annotation)
        out: dict[str, str] = {}
        for entries in ann.values():
            for e in entries:
                if "study_id" not in e:
                    raise ValueError(f"{annotation}: entry {e.get('id')!r} has no study_id")
                out[_study_key(e["study_id"])] = e["report"]
        return out
