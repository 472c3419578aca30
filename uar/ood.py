"""Input-domain check: does a study look like what the model was trained and validated on?

The score is computed from what the model reads of each view, so it works for every encoder:

1. *features*, one vector per view that depends on that view alone, named in the checkpoint:
   - ``code-vector-mean-per-view`` (LSU models): the mean of the visual tokenizer's code vectors of
     the view's token ids (:func:`code_features`; 112 numbers for the semantic tokenizer). It is a
     function of the token ids the model reads, in the frozen tokenizer's space, so it does not
     depend on how long the transformer trained: the trained embedding W_I hardly moves the rows of
     codes that training images seldom use, which are the codes unusual images bring, and a
     longer-trained model's embedding mean separated real radiographs less well (docs/ood.md).
   - ``embedding-mean-per-view`` (CNN models): the mean over the view's tokens of the model's
     visual embedding E^(I) (:meth:`uar.model.UAR.embed_visual`: the CNN grid features), one vector
     of ``d_model`` numbers.
2. *per-view distance*: the Mahalanobis distance of that vector to the training split's vectors
   of the same view slot, with a Ledoit-Wolf shrunk covariance (:func:`ledoit_wolf`), so it is
   well conditioned for a few hundred reference studies.
3. *study score*: the largest distance over the views the study supplied (a missing lateral is
   not scored; the frontal stands in for it only as model input).

The threshold is a percentile (99 by default) of the study scores of the validation split: about
1 % of in-distribution studies score above it. The reference statistics (per view: mean ``(V, d)``,
precision ``(V, d, d)``) and the threshold are stored in the checkpoint (tensors ``input_check.*``
and the metadata key ``input_check``, see :mod:`uar.checkpoint`). A checkpoint without them has no
input check: its studies get the verdict ``unchecked``. docs/ood.md explains the choice (measured
against k-nearest neighbours and an energy score in benchmarks/ood.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from uar.model import UAR

Verdict = Literal["in_domain", "out_of_domain", "unchecked"]
VERDICTS: tuple[Verdict, ...] = ("in_domain", "out_of_domain", "unchecked")
METHOD = "mahalanobis"
EMBEDDING_MEAN = "embedding-mean-per-view"  # CNN models: mean of E^(I) per view, d_model numbers
CODE_MEAN = "code-vector-mean-per-view"  # LSU models: mean code vector of the view's token ids
FEATURES = (EMBEDDING_MEAN, CODE_MEAN)
CHECK_VERSION = 1
TENSOR_PREFIX = "input_check."
DEFAULT_PERCENTILE = 99.0
RIDGE = 1e-6  # added to the shrunk covariance, times its mean eigenvalue: always invertible


@dataclass(frozen=True)
class DomainVerdict:
    """The input-domain verdict of one study: ``score`` and ``threshold`` are None when unchecked."""

    verdict: Verdict
    score: float | None = None  # largest per-view Mahalanobis distance (dimensionless)
    threshold: float | None = None

    @classmethod
    def unchecked(cls) -> DomainVerdict:
        """The verdict of a model without calibration data."""
        return cls("unchecked")

    @property
    def out_of_domain(self) -> bool:
        """True when the study scored above the model's threshold."""
        return self.verdict == "out_of_domain"

    def numbers(self) -> str:
        """``"score 41.3, threshold 14.2"`` (empty when unchecked)."""
        if self.score is None or self.threshold is None:
            return ""
        return f"input-domain score {self.score:.1f}, threshold {self.threshold:.1f}"

    def statement(self) -> str:
        """One plain sentence for the report reader about this study's input check."""
        if self.verdict == "unchecked":
            return (
                "This model has no input-domain check (it was not calibrated), so it cannot tell "
                "whether this image resembles the images it was validated on."
            )
        if self.verdict == "out_of_domain":
            return (
                "The image is outside the model's validated input domain "
                f"({self.numbers()}): it does not resemble the images the model was trained and "
                "validated on."
            )
        return f"The image is within the model's validated input domain ({self.numbers()})."


@dataclass
class InputCheck:
    """Reference statistics and threshold of the input-domain score of one model."""

    mean: Tensor  # (V, d) float32, per view slot
    precision: Tensor  # (V, d, d) float32, inverse of the shrunk covariance
    threshold: float
    percentile: float = DEFAULT_PERCENTILE
    n_reference: int = 0  # studies the statistics come from (training split)
    n_calibration: int = 0  # studies the threshold comes from (validation split)
    shrinkage: list[float] = field(default_factory=list)  # Ledoit-Wolf intensity per view
    calibration_quantiles: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, max
    source: str = ""  # where the data came from, e.g. the dataset folder name
    method: str = METHOD
    feature: str = EMBEDDING_MEAN  # one of FEATURES

    def distances(self, features: Tensor) -> Tensor:
        """Per-view Mahalanobis distances: features (B, V, d) -> (B, V)."""
        if features.shape[1:] != self.mean.shape:
            raise ValueError(
                f"features {tuple(features.shape[1:])} do not match the input check {tuple(self.mean.shape)}"
            )
        x = features.float() - self.mean  # (B, V, d)
        m = torch.einsum("bvi,vij,bvj->bv", x, self.precision, x)  # (B, V)
        return m.clamp_min(0).sqrt()

    def scores(self, features: Tensor, supplied: Tensor | None = None) -> Tensor:
        """Study scores (B,): the largest distance over the supplied views (``supplied`` (B, V) bool)."""
        d = self.distances(features)
        if supplied is not None:
            d = d.masked_fill(~supplied, float("-inf"))
        return d.max(dim=1).values

    def verdicts(self, scores: Tensor) -> list[DomainVerdict]:
        """One verdict per study score."""
        return [
            DomainVerdict("out_of_domain" if s > self.threshold else "in_domain", float(s), self.threshold)
            for s in scores.tolist()
        ]

    def tensors(self) -> dict[str, Tensor]:
        """Checkpoint tensors (always float32)."""
        return {
            TENSOR_PREFIX + "mean": self.mean.float().contiguous(),
            TENSOR_PREFIX + "precision": self.precision.float().contiguous(),
        }

    def metadata(self) -> str:
        """The JSON string stored under the checkpoint metadata key ``input_check``."""
        return json.dumps(
            {
                "version": CHECK_VERSION,
                "method": self.method,
                "feature": self.feature,
                "threshold": self.threshold,
                "percentile": self.percentile,
                "n_reference": self.n_reference,
                "n_calibration": self.n_calibration,
                "shrinkage": self.shrinkage,
                "calibration_quantiles": self.calibration_quantiles,
                "source": self.source,
            }
        )

    @classmethod
    def from_checkpoint(cls, metadata: str, tensors: dict[str, Tensor]) -> InputCheck:
        """Rebuild from :meth:`metadata` and the ``input_check.*`` tensors; ``ValueError`` if unusable."""
        meta = json.loads(metadata)
        if meta.get("version") != CHECK_VERSION or meta.get("method") != METHOD:
            raise ValueError(
                f"input check version {meta.get('version')} / method {meta.get('method')!r} is not"
                f" supported (expected {CHECK_VERSION} / {METHOD!r}); recalibrate with `uar calibrate`"
            )
        feature = check_feature_name(meta.get("feature"))
        try:
            mean = tensors[TENSOR_PREFIX + "mean"].float()
            precision = tensors[TENSOR_PREFIX + "precision"].float()
        except KeyError as exc:
            raise ValueError(f"input check metadata present but tensor {exc} missing") from exc
        v, d = mean.shape
        if precision.shape != (v, d, d):
            raise ValueError(f"input check precision {tuple(precision.shape)} does not fit mean {(v, d)}")
        return cls(
            mean=mean,
            precision=precision,
            threshold=float(meta["threshold"]),
            percentile=float(meta["percentile"]),
            n_reference=int(meta["n_reference"]),
            n_calibration=int(meta["n_calibration"]),
            shrinkage=[float(s) for s in meta.get("shrinkage", [])],
            calibration_quantiles={k: float(x) for k, x in meta.get("calibration_quantiles", {}).items()},
            source=str(meta.get("source", "")),
            feature=feature,
        )


@torch.inference_mode()
def view_features(model: UAR, visual: Tensor) -> Tensor:
    """Pooled visual embedding per view: model input (B, V, ...) -> (B, V, d) float32.

    ``visual`` is the model's input (images for the CNN encoder, token ids for LSU); the result is
    the mean over each view's tokens of :meth:`UAR.embed_visual`.
    """
    return pool_views(model.embed_visual(visual), model.cfg.n_views)


def check_feature_name(feature: object) -> str:
    """``feature`` if it is one of :data:`FEATURES`; ``ValueError`` otherwise."""
    if not isinstance(feature, str) or feature not in FEATURES:
        raise ValueError(f"input check feature {feature!r} is not one of {', '.join(FEATURES)}")
    return feature


def code_features(code_vectors: Tensor, ids: Tensor) -> Tensor:
    """Mean code vector per view: the tokenizer's codebook ``(K, c)`` and token ids ``(B, V, L)``
    -> ``(B, V, c)`` float32 (feature ``code-vector-mean-per-view``)."""
    if ids.dim() != 3:
        raise ValueError(f"expected token ids (B, V, L), got {tuple(ids.shape)}")
    return code_vectors.float()[ids].mean(dim=2)


def feature_for(visual_encoder: str) -> str:
    """The feature a new check of a model with this encoder ("lsu" or "cnn") is fitted on."""
    return CODE_MEAN if visual_encoder == "lsu" else EMBEDDING_MEAN


def pool_views(embedding: Tensor, n_views: int) -> Tensor:
    """Mean over each view's tokens: E^(I) (B, V*L, d), view-major -> (B, V, d) float32."""
    b, _, d = embedding.shape
    return embedding.reshape(b, n_views, -1, d).mean(dim=2).float()


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of samples ``x`` (n, d): (mean (d,), covariance (d, d), intensity).

    Shrinks the sample covariance towards ``mu * I`` (``mu`` its mean eigenvalue) with the
    intensity that minimises the expected Frobenius error (Ledoit & Wolf 2004), computed in float64;
    a ridge of ``RIDGE * mu`` keeps it invertible when a feature never varies. Raises ``ValueError``
    when no feature varies at all.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"need at least 2 reference studies, got {n}")
    mean = x.mean(axis=0)
    xc = x - mean
    s = xc.T @ xc / n  # (d, d)
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2) / d
    beta = (np.sum(np.sum(xc**2, axis=1) ** 2) - n * np.sum(s**2)) / (n * n * d)
    if mu <= 0:
        raise ValueError("the reference features do not vary: the model's embedding is constant on this data")
    shrink = 0.0 if delta <= 0 else float(min(max(beta / delta, 0.0), 1.0))
    cov = shrink * mu * np.eye(d) + (1.0 - shrink) * s
    return mean, cov + RIDGE * mu * np.eye(d), shrink


def fit_input_check(
    reference: Tensor,
    calibration: Tensor,
    calibration_supplied: Tensor | None = None,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    source: str = "",
    feature: str = EMBEDDING_MEAN,
) -> InputCheck:
    """Fit the statistics on ``reference`` features (N, V, d) and set the threshold at ``percentile``
    of the study scores of ``calibration`` features (M, V, d); ``feature`` names what they are
    (one of :data:`FEATURES`: :func:`view_features` or :func:`code_features`)."""
    if not 50.0 <= percentile < 100.0:
        raise ValueError(f"percentile must be in [50, 100), got {percentile}")
    check_feature_name(feature)
    if reference.dim() != 3 or calibration.dim() != 3 or reference.shape[1:] != calibration.shape[1:]:
        raise ValueError(
            f"reference {tuple(reference.shape)} and calibration {tuple(calibration.shape)} features"
            " must both be (N, V, d)"
        )
    if calibration.shape[0] < 1:
        raise ValueError("no calibration (validation) studies")
    means, precisions, shrinks = [], [], []
    for v in range(reference.shape[1]):
        mean, cov, shrink = ledoit_wolf(reference[:, v].double().numpy())
        means.append(mean)
        precisions.append(np.linalg.inv(cov))
        shrinks.append(shrink)
    check = InputCheck(
        mean=torch.tensor(np.stack(means), dtype=torch.float32),
        precision=torch.tensor(np.stack(precisions), dtype=torch.float32),
        threshold=0.0,
        percentile=percentile,
        n_reference=int(reference.shape[0]),
        n_calibration=int(calibration.shape[0]),
        shrinkage=shrinks,
        source=source,
        feature=feature,
    )
    scores = check.scores(calibration, calibration_supplied).double().numpy()
    check.threshold = float(np.percentile(scores, percentile))
    check.calibration_quantiles = {
        "p50": float(np.percentile(scores, 50)),
        "p95": float(np.percentile(scores, 95)),
        "p99": float(np.percentile(scores, 99)),
        "max": float(scores.max()),
    }
    return check


StudyImages = tuple[np.ndarray, np.ndarray | None]
Encoder = Callable[[list[StudyImages]], tuple[Tensor, Tensor]]  # studies -> (features, supplied)
# image paths of studies (frontal first) and a progress label -> (features (N, V, d), supplied (N, V))
StudyFeatures = Callable[[Sequence[tuple[Path, ...]], str], tuple[Tensor, Tensor]]


def split_studies(data_dir: str | Path, split: str, limit: int | None = None) -> list[tuple[Path, ...]]:
    """Image paths (frontal first) of the studies of one split of an R2Gen ``annotation.json``."""
    from uar.data.r2gen import _resolve_image, read_annotation

    root = Path(data_dir)
    ann = read_annotation(root / "annotation.json")
    entries = ann.get(split, [])
    if limit is not None:
        entries = entries[:limit]
    return [tuple(_resolve_image(root, p) for p in e["image_path"]) for e in entries]


def dataset_features(
    encode: Encoder, studies: Sequence[tuple[Path, ...]], *, batch_size: int = 32, desc: str = "features"
) -> tuple[Tensor, Tensor]:
    """Features (N, V, d) and supplied-view masks (N, V) of image studies.

    ``encode`` maps a list of (frontal, lateral or None) images to ``(features, supplied)``, e.g.
    :meth:`uar.generator.ReportGenerator.view_features`.
    """
    from uar.data.images import load_image

    feats, masks = [], []
    for start in tqdm(range(0, len(studies), batch_size), desc=desc, unit="batch", disable=None):
        batch: list[StudyImages] = []
        for paths in studies[start : start + batch_size]:
            images = [load_image(p) for p in paths]
            batch.append((images[0], images[1] if len(images) > 1 else None))
        f, m = encode(batch)
        feats.append(f)
        masks.append(m)
    if not feats:
        raise ValueError("no studies to compute features of")
    return torch.cat(feats), torch.cat(masks)


def image_features(encode: Encoder) -> StudyFeatures:
    """A :data:`StudyFeatures` that loads each study's images and runs ``encode`` on them."""

    def features(studies: Sequence[tuple[Path, ...]], desc: str) -> tuple[Tensor, Tensor]:
        return dataset_features(encode, studies, desc=desc)

    return features


def calibrate_on_dataset(
    features: StudyFeatures,
    data_dir: str | Path,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    max_reference: int | None = None,
    reference_split: str = "train",
    calibration_split: str = "val",
    feature: str = EMBEDDING_MEAN,
) -> InputCheck:
    """Fit an :class:`InputCheck` on an R2Gen dataset folder: statistics from ``reference_split``
    (at most ``max_reference`` studies), threshold from ``calibration_split`` (never the test split);
    ``feature`` names what ``features`` computes (one of :data:`FEATURES`).

    Raises ``ValueError`` when a split is missing or empty.
    """
    ref = split_studies(data_dir, reference_split, max_reference)
    cal = split_studies(data_dir, calibration_split)
    if len(ref) < 2:
        raise ValueError(
            f"{data_dir}: the {reference_split!r} split needs at least 2 studies, has {len(ref)}"
        )
    if not cal:
        raise ValueError(f"{data_dir}: the {calibration_split!r} split is empty (the threshold needs it)")
    ref_f, _ = features(ref, f"{reference_split} features")
    cal_f, cal_m = features(cal, f"{calibration_split} features")
    source = f"{Path(data_dir).name}: {len(ref)} {reference_split} / {len(cal)} {calibration_split} studies"
    return fit_input_check(ref_f, cal_f, cal_m, percentile=percentile, source=source, feature=feature)
