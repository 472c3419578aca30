"""``uar train --dataset mimic_cxr`` on the MIMIC-CXR-JPG layout (split/metadata CSVs, files/, reports).

A miniature of the PhysioNet layout with real IU-Xray report texts as FINDINGS and real radiographs as
JPEGs. Checks the MIMIC defaults end to end: one frontal view, max_len 100, and a vocabulary built
from the training split only with threshold 10.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from PIL import Image

from tests.train.conftest import IMAGE_SIZE
from uar.checkpoint import load_checkpoint
from uar.cli.train import configs_from_args, register
from uar.train import train

VAL_ONLY_WORD = "zebrastripe"  # appears 20 times, but only in validation reports


def _mimic_jpg(shared_data: Path, root: Path, n_train: int = 12, n_val: int = 3) -> Path:
    ann = json.loads((shared_data / "iu_xray" / "annotation.json").read_text())
    reports = [e["report"] for e in ann["train"][: n_train + n_val]]
    pngs = sorted((shared_data / "covid_chestxray" / "images").glob("*.png"))
    split_rows, meta_rows = [], []
    for i, report in enumerate(reports):
        subject, study = f"{10000000 + i}", f"{50000000 + i}"
        split = "train" if i < n_train else "validate"
        if split == "validate":
            report = f"{report} " + " ".join([VAL_ONLY_WORD] * 20)
        for j, view in enumerate(("PA", "LATERAL")):
            dicom = f"d{i:03d}{j}"
            path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(pngs[(2 * i + j) % len(pngs)]) as im:
                im.convert("L").resize((64, 64)).save(path, quality=90)
            split_rows.append([dicom, study, subject, split])
            meta_rows.append([dicom, subject, study, view])
        txt = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        txt.write_text(
            f"EXAMINATION: CHEST PA AND LAT\n\nFINDINGS: {report}\n\nIMPRESSION: No acute process.\n"
        )
    for name, header, rows in (
        ("mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split_rows),
        ("mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"], meta_rows),
    ):
        with (root / name).open("w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    return root


def test_mimic_jpg_layout_with_mimic_defaults(shared_data, tiny_visual_tokenizer, tmp_path):
    data = _mimic_jpg(shared_data, tmp_path / "mimic")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    tiny = ["--d-model", "32", "--n-heads", "4", "--d-ff", "64", "--layers", "1", "--n-basis", "32"]
    args = parser.parse_args(["train", "--data", str(data), "--out", "x", "--dataset", "mimic_cxr", *tiny,
                              "--epochs1", "1", "--epochs2", "1", "--batch-size", "4"])  # fmt: skip
    model_cfg, train_cfg = configs_from_args(args)
    best = train(data, tmp_path / "run", model_cfg, train_cfg, visual_tokenizer_path=tiny_visual_tokenizer,
                 progress=False)  # fmt: skip

    ckpt = load_checkpoint(best)
    assert (ckpt.cfg.n_views, ckpt.cfg.max_len, ckpt.cfg.tokens_per_view) == (1, 100, (IMAGE_SIZE // 8) ** 2)
    tok = ckpt.text_tokenizer
    assert (tok.dataset, tok.threshold, tok.max_len) == ("mimic_cxr", 10, 100)
    train_words = [w for r in ann_reports(data, "train") for w in tok.clean(r).split()]
    expected = sorted({w for w in train_words if train_words.count(w) >= 10})
    assert tok.words == expected and VAL_ONLY_WORD not in tok.words
    assert ckpt.meta["train_config"].step_size == 3 and ckpt.meta["train_config"].dataset == "mimic_cxr"


def ann_reports(root: Path, split: str) -> list[str]:
    """FINDINGS texts of ``split`` as written by :func:`_mimic_jpg`."""
    wanted = {"train": "train", "val": "validate"}[split]
    rows = csv.DictReader((root / "mimic-cxr-2.0.0-split.csv").open())
    studies = {(r["subject_id"], r["study_id"]) for r in rows if r["split"] == wanted}
    out = []
    for subject, study in sorted(studies):
        text = (root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt").read_text()
        out.append(text.split("FINDINGS:")[1].split("IMPRESSION:")[0].strip())
    return out
