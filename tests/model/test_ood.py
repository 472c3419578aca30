"""The input-domain check (uar.ood): fit, determinism, checkpoint storage, CLI, withheld reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.helpers.tiny import make_tiny_checkpoint, tiny_text_tokenizer
from uar.calibration import calibrate_checkpoint, has_input_check
from uar.checkpoint import load_checkpoint, read_metadata, save_checkpoint, write_input_check
from uar.cli import main
from uar.data.images import load_image, to_tensor
from uar.data.r2gen import R2GenDataset, VisualTokenCache
from uar.generator import ReportGenerator
from uar.ood import CODE_MEAN, EMBEDDING_MEAN, InputCheck, fit_input_check, ledoit_wolf, view_features


def _write_dataset(root: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A small R2Gen folder of smooth two-view 'radiographs' (blurred noise around a fixed layout)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    base = 0.3 + 0.4 * np.exp(-((xx - 0.5) ** 2) / 0.02)  # a bright vertical band (mediastinum)
    ann: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        sid = f"s{i:03d}"
        (root / "images" / sid).mkdir(parents=True)
        for k in range(2):
            level = rng.uniform(-0.2, 0.2)  # exposure varies from study to study
            img = np.clip(base + level + 0.1 * rng.standard_normal((64, 64)) + 0.05 * k, 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(root / "images" / sid / f"{k}.png")
        ann[split].append(
            {"id": sid, "report": "the lungs are clear .", "image_path": [f"{sid}/0.png", f"{sid}/1.png"]}
        )
    (root / "annotation.json").write_text(json.dumps(ann))
    return root


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(uncalibrated tiny checkpoint, its calibrated copy, the dataset folder)."""
    root = tmp_path_factory.mktemp("ood")
    data = _write_dataset(root / "data", n_train=24, n_val=12)
    plain = make_tiny_checkpoint(root / "tiny.safetensors", preset="base")  # CNN encoder
    out, _ = calibrate_checkpoint(plain, data, root / "calibrated.safetensors")
    return plain, out, data


def _noise_study(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((64, 64), dtype=np.float32), rng.random((64, 64), dtype=np.float32)


def test_ledoit_wolf_shrinks_towards_the_identity_and_stays_invertible() -> None:
    rng = np.random.default_rng(0)
    few = rng.standard_normal((10, 32))  # fewer samples than dimensions: the sample covariance is singular
    mean, cov, shrink = ledoit_wolf(few)
    assert 0 < shrink <= 1 and np.allclose(mean, few.mean(0))
    assert np.linalg.eigvalsh(cov).min() > 0
    many = rng.standard_normal((5000, 4)) @ np.diag([1.0, 2.0, 3.0, 4.0])
    _, cov_many, shrink_many = ledoit_wolf(many)
    assert shrink_many < 0.05 and np.allclose(np.diag(cov_many), [1, 4, 9, 16], rtol=0.1)


def test_threshold_is_the_validation_percentile_and_far_points_score_above_it() -> None:
    gen = torch.Generator().manual_seed(0)
    ref, val = torch.randn(400, 2, 8, generator=gen), torch.randn(200, 2, 8, generator=gen)
    check = fit_input_check(ref, val, percentile=95)
    scores = check.scores(val)
    assert abs(float((scores > check.threshold).float().mean()) - 0.05) < 0.011
    far = torch.randn(5, 2, 8, generator=gen) + 10.0
    assert all(v.out_of_domain for v in check.verdicts(check.scores(far)))
    # an unsupplied view is not scored: a wild lateral of a frontal-only study does not count
    mixed = torch.stack([val[0, 0], far[0, 1]])[None]
    supplied = torch.tensor([[True, False]])
    assert float(check.scores(mixed, supplied)) == pytest.approx(float(check.distances(mixed)[0, 0]))
    with pytest.raises(ValueError, match="percentile"):
        fit_input_check(ref, val, percentile=100)


def test_calibration_is_stored_loaded_and_scores_are_deterministic(
    calibrated: tuple[Path, Path, Path],
) -> None:
    plain, out, _ = calibrated
    assert not has_input_check(plain) and has_input_check(out)
    meta = json.loads(read_metadata(out)["input_check"])
    assert meta["n_reference"] == 24 and meta["n_calibration"] == 12 and meta["percentile"] == 99.0
    # same weights byte for byte: only the input_check tensors were added
    before, after = load_file(str(plain)), load_file(str(out))
    assert set(after) - set(before) == {"input_check.mean", "input_check.precision"}
    assert all(torch.equal(before[k], after[k]) for k in before)
    first = ReportGenerator.load(out)
    second = ReportGenerator.load(out)
    study = _noise_study(1)
    v1, v2, v3 = (
        first.check_domain([study])[0],
        first.check_domain([study])[0],
        second.check_domain([study])[0],
    )
    assert v1 == v2 == v3 and v1.score is not None and v1.threshold == pytest.approx(meta["threshold"])
    # generate carries the same verdict, and the same findings as the uncalibrated model
    report = first.generate(*study, beam_size=1)
    assert report.domain == v1
    assert report.findings == ReportGenerator.load(plain).generate(*study, beam_size=1).findings
    # in-distribution validation studies mostly pass, pure noise does not
    assert first.check_domain([_noise_study(2)])[0].out_of_domain


def test_lsu_models_are_scored_on_the_code_vectors_of_their_tokens_not_on_w_i(tmp_path: Path) -> None:
    ckpt = load_checkpoint(make_tiny_checkpoint(tmp_path / "lsu.safetensors"))
    generator = ReportGenerator(ckpt)
    assert generator.check_feature == CODE_MEAN and ckpt.visual_tokenizer is not None
    codes = ckpt.visual_tokenizer.code_vectors()  # (K, c)
    cfg = ckpt.model.cfg
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, codes.shape[0] // 2, (60, cfg.n_views, cfg.tokens_per_view), generator=gen)
    feats = generator.input_features(ids)
    assert feats.shape == (60, cfg.n_views, codes.shape[1])
    assert torch.allclose(feats[7, 1], codes[ids[7, 1]].mean(dim=0))
    check = fit_input_check(feats[:40], feats[40:], feature=CODE_MEAN)
    unseen = torch.full((3, cfg.n_views, cfg.tokens_per_view), codes.shape[0] - 1)  # a code never used
    assert all(v.out_of_domain for v in check.verdicts(check.scores(generator.input_features(unseen))))
    # the trained embedding W_I does not enter: another training of it leaves the score as it is
    with torch.no_grad():
        for param in ckpt.model.parameters():
            param.mul_(3.0).add_(0.5)
    assert torch.equal(generator.input_features(ids), feats)
    # the embedding feature (what CNN models are checked on) is still there for an older check
    assert generator.input_features(ids, EMBEDDING_MEAN).shape == (60, cfg.n_views, cfg.d_model)
    assert torch.equal(view_features(ckpt.model, ids), generator.input_features(ids, EMBEDDING_MEAN))


def test_an_lsu_file_with_an_embedding_mean_check_is_still_scored_on_its_embedding(tmp_path: Path) -> None:
    # files calibrated before the code-vector feature (0.3.0 and older LSU models) keep their check
    path = make_tiny_checkpoint(tmp_path / "lsu.safetensors")
    model = load_checkpoint(path).model
    cfg = model.cfg
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.visual_vocab_size // 2, (40, cfg.n_views, cfg.tokens_per_view), generator=gen)
    old = fit_input_check(view_features(model, ids[:30]), view_features(model, ids[30:]))
    assert old.feature == EMBEDDING_MEAN
    generator = ReportGenerator.load(write_input_check(path, old, tmp_path / "old.safetensors"))
    assert generator.input_check is not None and generator.input_check.feature == EMBEDDING_MEAN
    images = (np.full((64, 64), 0.4, np.float32), np.full((64, 64), 0.6, np.float32))
    verdict = generator.check_domain([images])[0]
    visual = generator.visual_input([images])
    expected = old.scores(view_features(model, visual), torch.ones(1, cfg.n_views, dtype=torch.bool))
    assert verdict.score == pytest.approx(float(expected[0]), rel=1e-5)
    assert generator.generate(*images, beam_size=1).domain == verdict


def test_a_check_on_a_feature_the_model_cannot_compute_is_refused(
    calibrated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    plain, out, _ = calibrated  # a CNN model: no visual tokens, no code vectors
    check = load_checkpoint(out).input_check
    assert check is not None and check.feature == EMBEDDING_MEAN
    check.feature = CODE_MEAN
    with pytest.raises(ValueError, match="needs a model with a visual tokenizer"):
        write_input_check(plain, check, tmp_path / "x.safetensors")
    check.feature = "pixel-histogram"
    with pytest.raises(ValueError, match="is not one of"):
        write_input_check(plain, check, tmp_path / "x.safetensors")
    # a file whose metadata names an unknown feature is refused at load, clearly
    metadata = dict(read_metadata(out))
    meta = json.loads(metadata["input_check"])
    for feature in ("pixel-histogram", None, 7):
        meta["feature"] = feature
        metadata["input_check"] = json.dumps(meta)
        bad = tmp_path / "bad.safetensors"
        save_file(load_file(str(out)), str(bad), metadata=metadata)
        with pytest.raises(ValueError, match="bad input check.*feature"):
            load_checkpoint(bad)


def _varied_tiny_lsu_checkpoint(path: Path, data: Path, seed: int = 0) -> Path:
    """A tiny LSU checkpoint whose VQ codes vary over the images of ``data``: the random-init
    encoder's features barely vary, so the codebook is spread around their mean."""
    ckpt = load_checkpoint(make_tiny_checkpoint(path, seed=seed))
    tok = ckpt.visual_tokenizer
    assert tok is not None
    size = tok.config.image_size
    paths = sorted((data / "images").rglob("*.png"))[:8]
    images = torch.stack([to_tensor(load_image(p), size) for p in paths])
    with torch.no_grad():
        z = tok.encoder(images)  # (8, C, h, w)
        spread = z.std(dim=(0, 2, 3))
        gen = torch.Generator().manual_seed(seed)
        codebook = tok.quantizer.codebook
        noise = torch.randn(codebook.shape, generator=gen)
        codebook.copy_(z.mean(dim=(0, 2, 3)) + 2 * spread * noise)
    return save_checkpoint(path, ckpt.model, ckpt.text_tokenizer, tok, name="uar-tiny-lsu", version="0.0.0")


def test_an_lsu_model_calibrates_from_its_token_cache_as_from_the_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _write_dataset(tmp_path / "data", n_train=24, n_val=12, seed=3)
    ann = json.loads((data / "annotation.json").read_text())
    ann["val"][0]["image_path"] = ann["val"][0]["image_path"][:1]  # a frontal-only study
    (data / "annotation.json").write_text(json.dumps(ann))
    ckpt = _varied_tiny_lsu_checkpoint(tmp_path / "lsu.safetensors", data)
    _, from_images = calibrate_checkpoint(ckpt, data, tmp_path / "images.safetensors")
    tok = load_checkpoint(ckpt).visual_tokenizer
    assert tok is not None
    cache = VisualTokenCache(tok, tmp_path / "tokens.safetensors", n_crops=0)
    for split in ("train", "val"):  # as training fills it; the file is written once, at the end
        dataset = R2GenDataset(data, split, tiny_text_tokenizer(), 2, tok.config.image_size, False, cache)
        dataset.precompute_tokens(save=split == "val")
    # every id now comes from the file: the tokenizer's encoder is never run again
    monkeypatch.setattr(type(tok), "encode", lambda *a, **k: pytest.fail("tokenizer ran"))
    out, from_cache = calibrate_checkpoint(
        ckpt, data, tmp_path / "cache.safetensors", token_cache=tmp_path / "tokens.safetensors"
    )
    # an LSU model's check is fitted on the mean code vector of each view's tokens
    assert from_images.feature == from_cache.feature == CODE_MEAN
    assert tuple(from_images.mean.shape) == (2, tok.code_vectors().shape[1])
    assert from_cache.threshold == pytest.approx(from_images.threshold, rel=1e-5)
    for name, t in from_images.tensors().items():
        assert torch.allclose(t, from_cache.tensors()[name], rtol=1e-4, atol=1e-5), name
    assert has_input_check(out)
    cli_out = tmp_path / "cli.safetensors"
    args = [
        "calibrate",
        str(ckpt),
        "--data",
        str(data),
        "--token-cache",
        str(cache.path),
        "--out",
        str(cli_out),
    ]
    assert main(args) == 0
    assert load_checkpoint(cli_out).input_check.threshold == pytest.approx(from_cache.threshold)
    # a file that is no token cache (garbage bytes, another safetensors file) is refused clearly
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a visual token cache"):
        calibrate_checkpoint(ckpt, data, tmp_path / "g.safetensors", token_cache=garbage)
    with pytest.raises(ValueError, match="not a visual token cache"):
        calibrate_checkpoint(ckpt, data, tmp_path / "g.safetensors", token_cache=ckpt)
    with pytest.raises(FileNotFoundError):
        calibrate_checkpoint(ckpt, data, tmp_path / "g.safetensors", token_cache=tmp_path / "missing")
    # a cache of another tokenizer, or a CNN model, is refused with a clear error
    other = _varied_tiny_lsu_checkpoint(tmp_path / "other.safetensors", data, seed=1)
    with pytest.raises(ValueError, match="another visual tokenizer"):
        calibrate_checkpoint(other, data, tmp_path / "x.safetensors", token_cache=cache)
    cnn = make_tiny_checkpoint(tmp_path / "cnn.safetensors", preset="base")
    with pytest.raises(ValueError, match="CNN features"):
        calibrate_checkpoint(cnn, data, tmp_path / "y.safetensors", token_cache=cache.path)


def test_a_checkpoint_without_calibration_says_it_has_no_check(calibrated: tuple[Path, Path, Path]) -> None:
    plain, _, _ = calibrated
    generator = ReportGenerator.load(plain)
    assert generator.input_check is None and load_checkpoint(plain).input_check is None
    report = generator.generate(*_noise_study(3), beam_size=1)
    assert report.domain.verdict == "unchecked" and report.domain.score is None
    assert "no input-domain check" in report.domain.statement()


def test_withhold_generates_no_findings_for_out_of_domain_studies(
    calibrated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, out, _ = calibrated
    check = load_checkpoint(out).input_check
    assert check is not None
    check.threshold = -1.0  # every study is out of domain
    strict = write_input_check(out, check, tmp_path / "strict.safetensors")
    generator = ReportGenerator.load(strict)
    flagged = generator.generate(*_noise_study(4), beam_size=1)
    assert flagged.domain.out_of_domain and not flagged.withheld and flagged.token_ids
    withheld = generator.generate(*_noise_study(4), beam_size=1, withhold_out_of_domain=True)
    assert withheld.withheld and withheld.token_ids == [] and set(withheld.labels.values()) == {None}
    assert "outside the model's validated input domain" in withheld.findings
    assert write_input_check(strict, None) == strict and ReportGenerator.load(strict).input_check is None


def test_a_check_that_does_not_fit_the_model_is_refused(
    calibrated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    plain, _, _ = calibrated
    wrong = InputCheck(mean=torch.zeros(2, 5), precision=torch.eye(5).repeat(2, 1, 1), threshold=1.0)
    with pytest.raises(ValueError, match="do not fit the model"):
        write_input_check(plain, wrong, tmp_path / "x.safetensors")


def test_cli_calibrate_generate_and_export(
    calibrated: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, _, data = calibrated
    target = tmp_path / "m.safetensors"
    target.write_bytes(plain.read_bytes())
    target.chmod(0o644)
    assert main(["calibrate", str(target), "--data", str(data), "--percentile", "95"]) == 0
    assert "threshold" in capsys.readouterr().out and has_input_check(target)
    assert target.stat().st_mode & 0o777 == 0o644  # calibrated in place, still readable by a node user
    image = data / "images" / "s000" / "0.png"
    assert main(["generate", str(image), "--checkpoint", str(target), "--beam", "1"]) == 0
    text = capsys.readouterr().out
    assert "Input domain: in domain" in text or "Input domain: out of domain" in text
    assert main(["generate", str(image), "--checkpoint", str(plain), "--beam", "1"]) == 0
    assert "Input domain: unchecked" in capsys.readouterr().out
    # export keeps the check for the same weights; a calibration folder recomputes it on fp16 weights
    kept = tmp_path / "kept.safetensors"
    assert main(["export", str(target), str(kept)]) == 0
    assert load_checkpoint(kept).input_check.threshold == load_checkpoint(target).input_check.threshold
    fp16 = tmp_path / "fp16.safetensors"
    assert main(["export", str(target), str(fp16), "--fp16", "--calibration-data", str(data)]) == 0
    assert has_input_check(fp16)
    missing = tmp_path / "empty"
    missing.mkdir()
    (missing / "annotation.json").write_text(json.dumps({"train": [], "val": []}))
    assert main(["calibrate", str(target), "--data", str(missing)]) == 2
    assert "at least 2 studies" in capsys.readouterr().err


def test_the_embedded_default_model_flags_a_real_radiograph_not_a_synthetic_study(shared_data: Path) -> None:
    from uar.data.images import load_image
    from uar.synthetic.render import render
    from uar.synthetic.sampling import sample_case

    generator = ReportGenerator.load(None)
    assert generator.input_check is not None and generator.input_check.percentile == 99.0
    case = sample_case(np.random.default_rng([2, 0]))  # held-out test case 0 (seed 2)
    synthetic = (render(case, "frontal", size=256), render(case, "lateral", size=256))
    real = load_image(sorted((shared_data / "covid_chestxray" / "images").glob("*.png"))[0])
    inside, outside = generator.check_domain([synthetic, (real, None)])
    assert inside.verdict == "in_domain" and outside.verdict == "out_of_domain"
    # a margin, not only the verdict: 2.13 x for 0.4.0 and 0.5.0 on their code-vector feature (2.38 x
    # the median real radiograph over 450, benchmarks/ood.py; 0.3.0 on its embedding mean gave 1.19 x)
    assert inside.score is not None and outside.score is not None and outside.threshold is not None
    assert outside.score > 1.5 * outside.threshold and inside.score < outside.threshold
