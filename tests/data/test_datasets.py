"""R2Gen and MIMIC-CXR-JPG datasets, collate and the visual-token cache, on tiny real-data folders."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from uar.data.images import load_image, to_tensor
from uar.data.mimic import MimicCxrJpgDataset, extract_findings
from uar.data.r2gen import R2GenDataset, VisualTokenCache, collate, crop_offsets
from uar.text import TextTokenizer, clean_report_iu, clean_report_mimic
from uar.visual.vqvae import VisualTokenizer, VQConfig


@pytest.fixture(scope="module")
def iu_entries(shared_data: Path) -> list[dict]:
    return json.loads((shared_data / "iu_xray" / "annotation.json").read_text())["train"][:8]


@pytest.fixture(scope="module")
def pngs(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "covid_chestxray" / "images").glob("*.png"))[:16]


@pytest.fixture()
def r2gen_root(tmp_path: Path, iu_entries: list[dict], pngs: list[Path], dicom_dir: Path) -> Path:
    """8 IU studies (real reports) with two real radiographs each; one lateral slot is a DICOM file."""
    root = tmp_path / "iu"
    ann: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i, e in enumerate(iu_entries):
        split = "train" if i < 6 else ("val" if i == 6 else "test")
        paths = [f"{e['id']}/0.png", f"{e['id']}/1.png"]
        for j, rel in enumerate(paths):
            (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(pngs[2 * i + j], root / "images" / rel)
        entry = {"id": e["id"], "report": e["report"], "image_path": paths, "split": split}
        if i == 0:
            entry["labels"] = {"Cardiomegaly": 0}
        ann[split].append(entry)
    dcm = f"{iu_entries[1]['id']}/1.dcm"
    shutil.copy(dicom_dir / "dwv__gdcm-CR-MONO1-10-chest.dcm", root / "images" / dcm)
    ann["train"][1]["image_path"][1] = dcm
    (root / "annotation.json").write_text(json.dumps(ann))
    return root


def tokenizer_for(root: Path) -> TextTokenizer:
    ann = json.loads((root / "annotation.json").read_text())
    reports = [clean_report_iu(e["report"]) for e in ann["train"]]
    return TextTokenizer.build(reports, threshold=1, max_len=60, dataset="iu_xray")


def test_r2gen_items_and_transforms(r2gen_root: Path) -> None:
    tok = tokenizer_for(r2gen_root)
    ds = R2GenDataset(r2gen_root, "train", tok, n_views=2, image_size=112, train=False)
    assert len(ds) == 6
    s = ds[0]
    assert len(s.images) == 2 and s.images[0].shape == (1, 112, 112) and s.tokens is None
    assert s.labels == {"Cardiomegaly": 0} and ds[2].labels is None
    assert s.ids.tolist() == tok.encode(s.report)
    assert bool((s.ids >= 2).all())  # threshold 1 on the training split: no <unk>
    assert torch.equal(s.images[0], to_tensor(load_image(ds.records[0].image_paths[0]), 112))
    dicom_view = ds[1].images[1]  # rendered from the DICOM file, display polarity
    assert dicom_view.shape == (1, 112, 112)
    assert 0.0 <= float(dicom_view.min()) <= float(dicom_view.max()) <= 1.0

    train = R2GenDataset(r2gen_root, "train", tok, n_views=2, image_size=112, train=True, seed=3)
    a, b = train[0].images[0], train[0].images[0]
    assert torch.equal(a, b)  # same seed, epoch and index
    later = []
    for epoch in range(1, 6):
        train.set_epoch(epoch)
        later.append(train[0].images[0])
    assert any(not torch.equal(a, x) for x in later)
    one_view = R2GenDataset(r2gen_root, "val", tok, n_views=1, image_size=112, train=False)
    assert len(one_view) == 1 and len(one_view[0].images) == 1
    with pytest.raises(ValueError, match="split 'dev'"):
        R2GenDataset(r2gen_root, "dev", tok, n_views=2, image_size=112, train=False)


def test_collate_layout(r2gen_root: Path) -> None:
    tok = tokenizer_for(r2gen_root)
    ds = R2GenDataset(r2gen_root, "train", tok, n_views=2, image_size=112, train=True)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch.visual.shape == (4, 2, 1, 112, 112) and batch.visual.dtype == torch.float32
    lengths = [len(ds[i].ids) for i in range(4)]
    assert batch.reports.shape == (4, max(lengths) + 2) and batch.reports.dtype == torch.long
    for i, n in enumerate(lengths):
        row = batch.reports[i].tolist()
        assert row[0] == 0 and row[1 : n + 1] == ds[i].ids.tolist() and set(row[n + 1 :]) == {0}
        assert batch.mask[i].tolist() == [True] * (n + 2) + [False] * (batch.reports.shape[1] - n - 2)
    assert batch.ids == [r.id for r in ds.records[:4]] and batch.texts[0] == ds.records[0].report
    assert batch.to("cpu").reports is not None


def test_long_report_fits_t_max(r2gen_root: Path) -> None:
    ann = json.loads((r2gen_root / "annotation.json").read_text())
    ann["train"][0]["report"] = " ".join(["The lungs are clear."] * 40)
    (r2gen_root / "annotation.json").write_text(json.dumps(ann))
    tok = tokenizer_for(r2gen_root)
    ds = R2GenDataset(r2gen_root, "train", tok, n_views=2, image_size=112, train=False)
    batch = collate([ds[0]])
    assert batch.reports.shape == (1, tok.max_len + 1)  # T = max_len


def test_visual_token_cache(r2gen_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    vt = VisualTokenizer(VQConfig(codebook_size=64, hidden=16, code_dim=16, n_res_blocks=1))
    tok = tokenizer_for(r2gen_root)
    cache_file = tmp_path / "tokens.safetensors"
    cache = VisualTokenCache(vt, cache_file, n_crops=3)
    assert crop_offsets(112, 3) == [(8, 8), (0, 0), (0, 16)]
    ds = R2GenDataset(r2gen_root, "train", tok, n_views=2, image_size=112, train=False, token_cache=cache)
    s = ds[0]
    assert s.images == [] and s.tokens is not None and s.tokens.shape == (2, 196)
    view = to_tensor(load_image(ds.records[0].image_paths[0]), 112)  # (1, 112, 112)
    assert torch.equal(s.tokens[0], vt.encode(view[None])[0])
    assert ds.precompute_tokens() == 12 - 2  # 6 studies x 2 views, both views of ds[0] already cached
    assert cache_file.is_file() and len(cache) == 12 * (1 + 3)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically

    loaded = VisualTokenCache(vt, cache_file, n_crops=3)
    assert len(loaded) == len(cache)
    train = R2GenDataset(r2gen_root, "train", tok, 2, 112, train=True, token_cache=loaded)
    eval_ds = R2GenDataset(r2gen_root, "train", tok, 2, 112, train=False, token_cache=loaded)
    shutil.rmtree(r2gen_root / "images")  # everything now comes from the cache file
    assert torch.equal(eval_ds[0].tokens, s.tokens)
    crops = set()
    for epoch in range(12):
        train.set_epoch(epoch)
        crops.add(tuple(train[0].tokens[0].tolist()))
    assert 1 <= len(crops) <= 3  # one of the 3 fixed crops per epoch
    batch = collate([train[i] for i in range(3)])
    assert batch.visual.shape == (3, 2, 196) and batch.visual.dtype == torch.long

    other = VisualTokenizer(VQConfig(codebook_size=64, hidden=16, code_dim=16, n_res_blocks=1))
    with pytest.raises(ValueError, match="another tokenizer"):
        VisualTokenCache(other, cache_file, n_crops=3)


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough.

 FINDINGS:
 {findings}

 IMPRESSION:
 No acute cardiopulmonary process.
"""


@pytest.fixture()
def mimic_root(tmp_path: Path, iu_entries: list[dict], pngs: list[Path]) -> Path:
    """3 subjects / 5 studies / 10 JPEGs in the MIMIC-CXR-JPG layout with real IU findings as reports."""
    root = tmp_path / "mimic"
    studies = [  # subject, study, split, [(dicom_id, view)], has findings
        ("10000032", "50414267", "train", [("d1", "PA"), ("d2", "LATERAL"), ("d3", "AP")], True),
        ("10000032", "53189527", "train", [("d4", "AP")], True),
        ("10000764", "57375967", "train", [("d5", "PA"), ("d6", "LL")], False),  # no FINDINGS section
        ("11000011", "51029426", "validate", [("d7", "PA"), ("d8", "LATERAL")], True),
        ("11000011", "59999999", "test", [("d9", "AP"), ("d10", "")], True),
    ]
    split_rows, meta_rows, n = [], [], 0
    for k, (subject, study, split, images, has_findings) in enumerate(studies):
        for dicom, view in images:
            jpg = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
            jpg.parent.mkdir(parents=True, exist_ok=True)
            Image.open(pngs[n]).convert("L").save(jpg, quality=90)
            n += 1
            split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
            meta_rows.append(
                {"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view}
            )
        txt = root / "mimic-cxr-reports" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        body = MIMIC_REPORT.format(findings=iu_entries[k]["report"])
        txt.write_text(body if has_findings else body.replace(" FINDINGS:", " COMPARISON:"))
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt", newline="") as f:
        w = csv.DictWriter(f, ["dicom_id", "study_id", "subject_id", "split"])
        w.writeheader()
        w.writerows(split_rows)
    with open(root / "mimic-cxr-2.0.0-metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
        w.writeheader()
        w.writerows(meta_rows)
    return root


def test_extract_findings(iu_entries: list[dict]) -> None:
    report = MIMIC_REPORT.format(findings=iu_entries[0]["report"])
    assert extract_findings(report) == " ".join(iu_entries[0]["report"].split())
    assert extract_findings("IMPRESSION: normal.") is None
    assert extract_findings("FINDINGS:\n  \nIMPRESSION: x") is None


def test_mimic_cxr_jpg_dataset(mimic_root: Path, iu_entries: list[dict]) -> None:
    tok = TextTokenizer.build(
        [clean_report_mimic(e["report"]) for e in iu_entries], threshold=1, max_len=100, dataset="mimic_cxr"
    )
    train = MimicCxrJpgDataset(mimic_root, "train", tok, image_size=112, train=True)
    # frontal views only, PA before AP, the study without FINDINGS skipped
    assert [r.id for r in train.records] == ["d1", "d3", "d4"]
    assert train.records[0].report == " ".join(iu_entries[0]["report"].split())
    s = train[0]
    assert len(s.images) == 1 and s.images[0].shape == (1, 112, 112)
    assert s.ids.tolist() == tok.encode(iu_entries[0]["report"])
    per_study = MimicCxrJpgDataset(mimic_root, "train", tok, image_size=112, train=False, per_study=True)
    assert [r.id for r in per_study.records] == ["d1", "d4"]
    val = MimicCxrJpgDataset(mimic_root, "val", tok, image_size=112, train=False)
    assert [r.id for r in val.records] == ["d7"]
    batch = collate([val[0], *[train[i] for i in range(2)]])
    assert batch.visual.shape == (3, 1, 1, 112, 112)
    img = val[0].images[0]
    ref = to_tensor(np.asarray(Image.open(val.records[0].image_paths[0]), dtype=np.float32) / 255.0, 112)
    assert torch.allclose(img, ref, atol=1e-6)

    ann = {"test": [{"id": "d9", "study_id": 59999999, "report": "Heart normal.", "image_path": []}]}
    (mimic_root / "annotation.json").write_text(json.dumps(ann))
    test = MimicCxrJpgDataset(
        mimic_root, "test", tok, image_size=112, train=False, annotation=mimic_root / "annotation.json"
    )
    assert [r.id for r in test.records] == ["d9"] and test.records[0].report == "Heart normal."

    (mimic_root / "files" / "p10" / "p10000032" / "s53189527" / "d4.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="d4.jpg"):
        MimicCxrJpgDataset(mimic_root, "train", tok, image_size=112, train=False)
    partial = MimicCxrJpgDataset(mimic_root, "train", tok, image_size=112, train=False, missing_ok=True)
    assert [r.id for r in partial.records] == ["d1", "d3"]


def test_an_interrupted_token_cache_fill_resumes(
    r2gen_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache file is written every ``save_every`` images: a fill stopped part way (here the
    tokenizer fails on the third batch) keeps what it computed, and the next fill does only the rest."""
    torch.manual_seed(0)
    vt = VisualTokenizer(VQConfig(codebook_size=64, hidden=16, code_dim=16, n_res_blocks=1))
    tok = tokenizer_for(r2gen_root)
    cache_file = tmp_path / "tokens.safetensors"
    ds = R2GenDataset(r2gen_root, "train", tok, n_views=2, image_size=112, train=False,
                      token_cache=VisualTokenCache(vt, cache_file, n_crops=1))  # fmt: skip
    real_fill = VisualTokenCache.fill_many
    calls = 0

    def failing_fill(self: VisualTokenCache, items: list) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        real_fill(self, items)

    monkeypatch.setattr(VisualTokenCache, "fill_many", failing_fill)
    with pytest.raises(KeyboardInterrupt):
        ds.precompute_tokens(batch_size=2, save_every=4)
    monkeypatch.setattr(VisualTokenCache, "fill_many", real_fill)
    assert len(VisualTokenCache(vt, cache_file, n_crops=1)) == 4 * 2  # 4 images saved, 2 crops each
    again = R2GenDataset(r2gen_root, "train", tok, n_views=2, image_size=112, train=False,
                         token_cache=VisualTokenCache(vt, cache_file, n_crops=1))  # fmt: skip
    assert again.precompute_tokens(batch_size=2, save_every=4) == 12 - 4
    assert len(VisualTokenCache(vt, cache_file, n_crops=1)) == 12 * 2


def test_visual_token_cache_without_crops(r2gen_root: Path) -> None:
    """n_crops=0 (training without augmentation): only the full view of each image is tokenised."""
    torch.manual_seed(0)
    vt = VisualTokenizer(VQConfig(codebook_size=64, hidden=16, code_dim=16, n_res_blocks=1))
    cache = VisualTokenCache(vt, None, n_crops=0)
    assert crop_offsets(112, 0) == []
    ds = R2GenDataset(
        r2gen_root,
        "train",
        tokenizer_for(r2gen_root),
        n_views=2,
        image_size=112,
        train=False,
        token_cache=cache,
    )
    assert ds.precompute_tokens(save=False) == 12
    assert len(cache) == 12 and all(key.endswith("|full") for key in cache._ids)


def test_token_precompute_shows_progress_in_a_log(r2gen_root, capsys):
    """A training run's log is no terminal: the token cache's bar is shown there when asked
    (25 silent minutes for 20000 views otherwise), and hidden when not."""
    vt = VisualTokenizer(VQConfig(codebook_size=64, hidden=16, code_dim=16, n_res_blocks=1))
    for progress, shown in ((True, True), (False, False)):
        cache = VisualTokenCache(vt, None, n_crops=0)
        ds = R2GenDataset(r2gen_root, "train", tokenizer_for(r2gen_root), 2, 112, False, cache)
        assert ds.precompute_tokens(save=False, progress=progress) == 12
        assert ("visual tokens" in capsys.readouterr().err) is shown
