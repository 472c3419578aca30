"""Input-domain check (uar.ood): share of studies flagged per set, candidate scores compared, cost.

From one run it prints, for a checkpoint whose input check is calibrated (``uar calibrate``):

- the share of studies flagged out of domain for each set: held-out synthetic studies (in
  distribution; e.g. ``uar data synthetic --seed 2``), the real chest radiographs of
  ``../shared/data/covid_chestxray`` (frontal only), the chest files of ``../shared/data/dicom``
  (through the app's study loader) and its non-chest files (loader rejection, and the score of their
  pixels when forced through the model);
- with ``--compare DIR`` (the calibration data: train + val splits), the same shares for candidate
  scores, each fitted on DIR's train split with its threshold at the 99th percentile of DIR's val
  split: Mahalanobis (Ledoit-Wolf shrinkage) on the mean code vector of each view's tokens (LSU
  models: the shipped feature, ``code-vector-mean-per-view``), on the pooled visual embedding per view
  (``embedding-mean-per-view``, the CNN models' feature) and on the pooled encoder output,
  k-nearest-neighbour cosine distance (k = 10) on the pooled embedding, and the energy score
  (-logsumexp of the decoder's first-word logits); with the AUROC of held-out synthetic vs real chest
  radiographs;
- the cost per study (one thread): the check itself on the model input and embedding ``generate``
  computes anyway (what the check adds to a study) and a stand-alone
  :meth:`ReportGenerator.check_domain` (tokens or embedding included).

Usage::

    python benchmarks/ood.py --test runs/default/test --compare runs/default/data \\
        [--checkpoint C] [--covid ../shared/data/covid_chestxray] [--dicom ../shared/data/dicom]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from operators.study_loader import CXRStudy, load_studies
from uar.data.images import load_image
from uar.generator import ReportGenerator
from uar.ood import CODE_MEAN, EMBEDDING_MEAN, fit_input_check, pool_views, split_studies

Studies = list[tuple[np.ndarray, np.ndarray | None]]
NON_CHEST = ("pydicom-data__RG3_J2KI.dcm", "pylibjpeg-data__RG2_JPLL.dcm", "highdicom__dx_image.dcm")
KNN_K = 10


def load_split(data: Path, split: str, limit: int | None = None) -> Studies:
    """(frontal, lateral) images of one split of an R2Gen folder."""
    out: Studies = []
    for paths in split_studies(data, split, limit):
        images = [load_image(p) for p in paths]
        out.append((images[0], images[1] if len(images) > 1 else None))
    return out


def synthetic_dicom_studies(n: int, seed: int = 2) -> Studies:
    """``n`` held-out synthetic cases (``default_rng([seed, i])``, as ``uar data synthetic``) written as
    two-series DICOM studies (512 px, :func:`uar.synthetic.dicom.write_study`) and read back
    through the app's study loader: the path a synthetic study sent to the node takes."""
    from uar.synthetic.dicom import write_study
    from uar.synthetic.sampling import sample_case

    out: Studies = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            folder = Path(tmp) / str(i)
            write_study(folder, sample_case(np.random.default_rng([seed, i])), seed)
            for result in load_studies(folder):
                if isinstance(result, CXRStudy):
                    lateral = result.lateral.pixels if result.lateral is not None else None
                    out.append((result.frontal.pixels, lateral))
    return out


def covid_studies(root: Path) -> Studies:
    """Every image of the covid-chestxray set as a frontal-only study."""
    return [(load_image(p), None) for p in sorted((root / "images").glob("*.png"))]


def dicom_sets(root: Path) -> tuple[Studies, list[str], Studies, list[str]]:
    """Chest studies the loader accepts, the files it rejects (with reason) and the non-chest pixels."""
    chest: Studies = []
    rejected: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted(root.glob("*.dcm")):
            folder = Path(tmp) / f.stem
            folder.mkdir()
            shutil.copyfile(f, folder / f.name)  # the loader does not follow symbolic links
            for result in load_studies(folder):
                if isinstance(result, CXRStudy):
                    lateral = result.lateral.pixels if result.lateral is not None else None
                    if f.name in NON_CHEST:
                        rejected.append(f"{f.name}: ACCEPTED by the loader")
                    chest.append((result.frontal.pixels, lateral))
                else:
                    rejected.append(f"{f.name}: {result.reason}")
    non_chest = [(load_image(root / name), None) for name in NON_CHEST]
    return chest, [r for r in rejected if r.split(":")[0] in NON_CHEST], non_chest, rejected


class Scorers:
    """Feature extractors and candidate scores over one generator (batched, inference mode)."""

    def __init__(self, generator: ReportGenerator) -> None:
        self.g = generator
        self.model = generator.model
        self.v = generator.config.n_views

    @torch.inference_mode()
    def features(self, studies: Studies, batch: int = 32) -> dict[str, Tensor]:
        """Per study: mean code vector per view (N, V, c; LSU models), embedding per view (N, V, d),
        encoder output per view (N, V, d), energy (N,), supplied views (N, V)."""
        out: dict[str, list[Tensor]] = {"embed": [], "encoder": [], "energy": [], "supplied": []}
        if self.g.visual_tokenizer is not None:
            out["codes"] = []
        for start in range(0, len(studies), batch):
            part = studies[start : start + batch]
            visual = self.g.visual_input(part)
            e = self.model.embed_visual(visual)
            if "codes" in out:
                out["codes"].append(self.g.input_features(visual, CODE_MEAN))
            out["embed"].append(self.g.input_features(visual, EMBEDDING_MEAN, e))
            state = self.model.init_decoding(visual, 1, 1, use_cache=False)
            out["encoder"].append(pool_views(state.memory, self.v))
            prefix = torch.zeros(len(part), 1, dtype=torch.long)
            x = self.model.align(self.model.embed_words(prefix), state.basis_kv)
            bias = state.tir_bias[:1] if state.tir_bias is not None else None
            logits = self.model.head(self.model.decoder(x, state.memory, bias)[:, -1])
            out["energy"].append(-torch.logsumexp(logits, dim=-1))
            out["supplied"].append(self.g._supplied(part))
        return {k: torch.cat(v) for k, v in out.items()}


def knn_scorer(reference: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """k-th nearest neighbour cosine distance per view to ``reference`` (N, V, d); max over views."""
    ref = F.normalize(reference, dim=-1)  # (N, V, d)

    def score(x: Tensor, supplied: Tensor) -> Tensor:
        q = F.normalize(x, dim=-1)  # (B, V, d)
        sims = torch.einsum("bvd,nvd->bvn", q, ref)  # (B, V, N)
        d = 1 - sims.topk(KNN_K, dim=-1).values[..., -1]  # (B, V)
        return d.masked_fill(~supplied, float("-inf")).max(dim=1).values

    return score


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    neg, pos = np.asarray(neg), np.asarray(pos)
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def share(scores: Tensor, threshold: float) -> str:
    n = len(scores)
    k = int((scores > threshold).sum())
    return f"{100 * k / max(n, 1):5.1f} % ({k}/{n})"


def timing(generator: ReportGenerator, studies: Studies, repeats: int) -> dict[str, float]:
    """Median milliseconds per study: the check on a given embedding, and stand-alone check_domain."""
    check = generator.input_check
    assert check is not None
    on_embedding, standalone = [], []
    with torch.inference_mode():
        for study in studies[:repeats]:
            visual = generator.visual_input([study])
            e = generator.model.embed_visual(visual)
            t0 = time.perf_counter()
            features = generator.input_features(visual, check.feature, e)
            check.verdicts(check.scores(features, generator._supplied([study])))
            on_embedding.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            generator.check_domain([study])
            standalone.append(time.perf_counter() - t0)
    return {
        "check_on_embedding_ms": 1e3 * float(np.median(on_embedding)),
        "check_domain_standalone_ms": 1e3 * float(np.median(standalone)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="calibrated model (default: embedded)")
    parser.add_argument("--test", type=Path, required=True, help="held-out synthetic set (test split)")
    parser.add_argument("--compare", type=Path, help="calibration data (train + val) for the candidates")
    parser.add_argument("--max-reference", type=int, default=None, help="train studies for the candidates")
    parser.add_argument("--covid", type=Path, default=Path("../shared/data/covid_chestxray"))
    parser.add_argument("--dicom", type=Path, default=Path("../shared/data/dicom"))
    parser.add_argument("--repeats", type=int, default=50, help="studies timed")
    parser.add_argument(
        "--synthetic-dicom", type=int, default=0, help="also N held-out synthetic studies sent as DICOM"
    )
    parser.add_argument("--out", type=Path, help="write the numbers as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = ReportGenerator.load(args.checkpoint)
    check = generator.input_check
    if check is None:
        raise SystemExit("this checkpoint has no input check: run `uar calibrate` first")
    print(f"model {generator.name} {generator.version} ({generator.config.visual_encoder} encoder)")
    print(f"input check: {check.feature}, threshold {check.threshold:.2f} (p{check.percentile:g})")
    print(f"  data: {check.source}")

    sets: dict[str, Studies] = {"synthetic held-out (ID)": load_split(args.test, "test")}
    if args.synthetic_dicom:
        sets["synthetic held-out as DICOM 512 px"] = synthetic_dicom_studies(args.synthetic_dicom)
    sets["covid-chestxray (real chest)"] = covid_studies(args.covid)
    chest, non_chest_rejected, non_chest, _ = dicom_sets(args.dicom)
    sets["dicom chest files (real chest)"] = chest
    sets["dicom non-chest pixels (forced)"] = non_chest

    results: dict[str, object] = {"feature": check.feature, "threshold": check.threshold, "sets": {}}
    scorers = Scorers(generator)
    feats = {name: scorers.features(studies) for name, studies in sets.items()}
    print("\nshipped score: share flagged out of domain")
    for name, f in feats.items():
        shipped = "codes" if check.feature == CODE_MEAN else "embed"
        scores = check.scores(f[shipped], f["supplied"])  # what ReportGenerator.check_domain computes
        print(f"  {name:34s} {share(scores, check.threshold)}   median score {scores.median():.1f}")
        results["sets"][name] = {  # type: ignore[index]
            "n": len(scores),
            "flagged": int((scores > check.threshold).sum()),
            "median_score": float(scores.median()),
        }
    print(f"  non-chest files rejected by the study loader: {len(non_chest_rejected)}/{len(NON_CHEST)}")
    for line in non_chest_rejected:
        print(f"    {line}")
    results["non_chest_rejected_by_loader"] = len(non_chest_rejected)

    if args.compare is not None:
        ref = scorers.features(load_split(args.compare, "train", args.max_reference))
        val = scorers.features(load_split(args.compare, "val"))
        candidates: dict[str, Callable[[dict[str, Tensor]], Tensor]] = {}
        for kind in ("codes", "embed", "encoder"):
            if kind not in ref:
                continue
            fitted = fit_input_check(ref[kind], val[kind], val["supplied"])
            candidates[f"mahalanobis-LW {kind}"] = lambda f, c=fitted, k=kind: c.scores(f[k], f["supplied"])
        knn = knn_scorer(ref["embed"])
        candidates[f"knn-{KNN_K} cosine embed"] = lambda f: knn(f["embed"], f["supplied"])
        candidates["energy (first word)"] = lambda f: f["energy"]
        compare: dict[str, object] = {}
        n_ref, n_val = len(ref["embed"]), len(val["embed"])
        print(f"\ncandidates (fitted on {n_ref} train studies, threshold p99 of {n_val} val)")
        for cname, fn in candidates.items():
            threshold = float(np.percentile(fn(val).numpy(), 99))
            row = {name: int((fn(f) > threshold).sum()) for name, f in feats.items()}
            a = auroc(
                fn(feats["synthetic held-out (ID)"]).numpy(),
                fn(feats["covid-chestxray (real chest)"]).numpy(),
            )
            shares = "  ".join(f"{share(fn(f), threshold)}" for f in feats.values())
            print(f"  {cname:26s} AUROC {a:.3f}  {shares}")
            compare[cname] = {"auroc_id_vs_covid": a, "threshold": threshold, "flagged": row}
        print("  (columns: " + " | ".join(feats) + ")")
        results["candidates"] = compare

    times = timing(generator, sets["synthetic held-out (ID)"], args.repeats)
    print(
        f"\ncost per study (1 thread, median of {args.repeats}): check on the shared embedding"
        f" {times['check_on_embedding_ms']:.2f} ms; stand-alone check_domain (embedding included)"
        f" {times['check_domain_standalone_ms']:.1f} ms"
    )
    results["timing"] = times
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
