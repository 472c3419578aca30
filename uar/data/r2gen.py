"""Report datasets in the R2Gen format, the batch layout of UAR, and the visual-token cache.

R2Gen layout (peers-and-metrics.md §1.4)::

    ROOT/annotation.json   {"train": [...], "val": [...], "test": [...]}
    ROOT/images/<image_path>   (PNG, JPEG or DICOM; paths relative to ROOT/images or ROOT)

Each entry has ``id``, ``report``, ``image_path`` (a list) and ``split``; an optional ``labels`` object
(e.g. CheXpert observations) is kept. IU-Xray uses two views per study (frontal, lateral), MIMIC-CXR
one (the first path). A study with fewer images than ``n_views`` repeats its first image, the same
rule as the report generator uses for a missing lateral.

Items are :class:`Study` objects; :func:`collate` stacks them into a :class:`Batch` with the model's
inputs: ``visual`` token ids ``(B, V, L)`` (with a :class:`VisualTokenCache`) or images
``(B, V, 1, S, S)``, and ``reports`` ``(B, T+1)`` laid out as in R2Gen: ``[0, w1 .. wn, 0, 0 ...]``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from uar.data.images import crop, load_image, to_tensor, train_resize
from uar.text.tokenizer import TextTokenizer
from uar.visual.kinds import AnyVisualTokenizer

__all__ = [
    "Batch",
    "R2GenDataset",
    "Record",
    "ReportDataset",
    "Study",
    "VisualTokenCache",
    "fingerprint",
    "image_key",
    "collate",
    "crop_offsets",
    "read_annotation",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One study before loading: its id, view image files (frontal first), raw report, labels."""

    id: str
    image_paths: tuple[Path, ...]
    report: str
    labels: dict[str, Any] | None = None


@dataclass
class Study:
    """One dataset item.

    ``images`` holds ``V`` tensors ``(1, S, S)`` in [0, 1]; it is empty when ``tokens`` (visual token
    ids ``(V, L)`` from the cache) is given instead. ``ids`` are the report's word ids, no bos/eos.
    """

    id: str
    images: list[Tensor]
    report: str
    ids: Tensor  # (n,) long
    labels: dict[str, Any] | None = None
    tokens: Tensor | None = None  # (V, L) long


@dataclass
class Batch:
    """A collated batch: the model's ``visual`` and ``reports`` inputs plus bookkeeping."""

    ids: list[str]
    visual: Tensor  # (B, V, L) long token ids, or (B, V, 1, S, S) float images
    reports: Tensor  # (B, T+1) long: [0, w1..wn, 0, pad 0...]
    mask: Tensor  # (B, T+1) bool: True on bos, words and eos (R2Gen's reports_masks)
    texts: list[str]  # raw reports
    labels: list[dict[str, Any] | None]

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with tensors moved to ``device``."""
        return Batch(
            self.ids,
            self.visual.to(device),
            self.reports.to(device),
            self.mask.to(device),
            self.texts,
            self.labels,
        )


def collate(batch: Sequence[Study]) -> Batch:
    """Stack studies into a :class:`Batch`; reports become ``[0, w1..wn, 0]`` right-padded with 0."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if all(s.tokens is not None for s in batch):
        visual = torch.stack([s.tokens for s in batch])  # type: ignore[misc]  # (B, V, L)
    elif all(s.tokens is None for s in batch):
        visual = torch.stack([torch.stack(s.images) for s in batch])  # (B, V, 1, S, S)
    else:
        raise ValueError("cannot mix studies with cached tokens and studies with images in one batch")
    width = max(len(s.ids) for s in batch) + 2  # T + 1
    reports = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T+1)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)  # (B, T+1)
    for i, s in enumerate(batch):
        n = len(s.ids)
        reports[i, 1 : n + 1] = s.ids
        mask[i, : n + 2] = True
    return Batch(
        [s.id for s in batch], visual, reports, mask, [s.report for s in batch], [s.labels for s in batch]
    )


def crop_offsets(image_size: int, n_crops: int) -> list[tuple[int, int]]:
    """Fixed training crop positions ``(top, left)`` inside the ``image_size * 8 / 7`` resize.

    Centre first, then the four corners, then the edge midpoints (at most 9); 0 gives none (training
    without crops reads the full view only).
    """
    m = train_resize(image_size) - image_size
    h = m // 2
    all_offsets = [(h, h), (0, 0), (0, m), (m, 0), (m, m), (0, h), (h, 0), (h, m), (m, h)]
    if not 0 <= n_crops <= len(all_offsets):
        raise ValueError(f"n_crops must be in 0..{len(all_offsets)}, got {n_crops}")
    return all_offsets[:n_crops]


class VisualTokenCache:
    """Visual token ids per (image, crop), computed once with a frozen visual tokenizer (either kind).

    Keys are ``"<image key>|<crop>"`` where crop is ``full`` (inference: resize to S) or ``c<i>``
    (training: the i-th of :func:`crop_offsets`). Training draws one of the ``n_crops`` fixed crops
    per step instead of a fresh random crop (uar-paper.md §2.2: tokens must be computed per crop, or a
    fixed set of crops precomputed). The cache can be stored as a safetensors file; it records a
    fingerprint of the tokenizer weights and is rejected if they change.
    """

    FORMAT = "uar-visual-token-cache/1"

    def __init__(
        self, tokenizer: AnyVisualTokenizer, path: str | Path | None = None, n_crops: int = 5
    ) -> None:
        self.tokenizer = tokenizer.eval()
        self.image_size = tokenizer.config.image_size
        self.n_crops = n_crops
        self.offsets = crop_offsets(self.image_size, n_crops)
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint(tokenizer)
        self._ids: dict[str, Tensor] = {}
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    @classmethod
    def open(cls, tokenizer: AnyVisualTokenizer, path: str | Path) -> VisualTokenCache:
        """The cache stored at ``path``, with the crop count it was made with.

        Raises ``FileNotFoundError`` when there is no file and ``ValueError`` when it is not a token
        cache or was made with another tokenizer.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"token cache not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            n_crops = int(meta.get("n_crops", 0))
        except (SafetensorError, ValueError) as exc:
            raise ValueError(f"{path}: not a visual token cache ({type(exc).__name__})") from None
        return cls(tokenizer, path, n_crops=n_crops)  # _load checks the format and the tokenizer

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def _load(self, path: Path) -> None:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != self.FORMAT:
                raise ValueError(f"{path}: not a visual token cache")
            if meta.get("fingerprint") != self.fingerprint or int(meta.get("n_crops", -1)) != self.n_crops:
                raise ValueError(f"{path}: token cache made with another tokenizer or crop set; delete it")
            keys = json.loads(meta["keys"])
            ids = f.get_tensor("ids")  # (N, L) int16
        self._ids = {k: ids[i].long() for i, k in enumerate(keys)}

    def save(self, path: str | Path | None = None) -> Path:
        """Write the cache (safetensors: one (N, L) int16 tensor, keys and fingerprint in metadata)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path given for the token cache")
        target.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._ids)
        ids = torch.stack([self._ids[k] for k in keys]).to(torch.int16) if keys else torch.zeros((0, 1))
        meta = {
            "format": self.FORMAT,
            "fingerprint": self.fingerprint,
            "n_crops": str(self.n_crops),
            "keys": json.dumps(keys),
        }
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        save_file({"ids": ids.to(torch.int16).contiguous()}, str(tmp), metadata=meta)
        tmp.replace(target)  # atomic: trainings sharing one cache file never read a partial one
        return target

    @staticmethod
    def key(image_key: str, crop_index: int | None) -> str:
        """Cache key of one image (``image_key``: path relative to the dataset root) and crop."""
        return f"{image_key}|{'full' if crop_index is None else f'c{crop_index}'}"

    def view(self, img: np.ndarray, crop_index: int | None) -> Tensor:
        """The tokenizer input ``(1, S, S)`` of ``img`` for a crop (None: inference resize)."""
        if crop_index is None:
            return to_tensor(img, self.image_size)
        top, left = self.offsets[crop_index]
        return crop(img, self.image_size, top, left)

    def get(self, image_key: str, path: Path, crop_index: int | None) -> Tensor:
        """Token ids ``(L,)`` of the image at ``path`` for ``crop_index``, computed on a miss."""
        key = self.key(image_key, crop_index)
        if key not in self._ids:
            self.fill(image_key, path)
        return self._ids[key]

    def fill(self, image_key: str, path: Path) -> None:
        """Load the image once and compute the tokens of all its crops (and of the full view)."""
        self.fill_many([(image_key, path)])

    def fill_many(self, items: Sequence[tuple[str, Path]]) -> None:
        """:meth:`fill` for several ``(image key, path)`` pairs with one tokenizer call (a batch of
        ``len(items) * (1 + n_crops)`` views)."""
        crops: list[int | None] = [None, *range(self.n_crops)]
        views = torch.stack(
            [self.view(load_image(path), c) for _, path in items for c in crops]
        )  # (N * (1 + n_crops), 1, S, S)
        device = next(self.tokenizer.buffers()).device
        ids = self.tokenizer.encode(views.to(device)).cpu()  # (N * (1 + n_crops), L)
        keys = [self.key(image_key, c) for image_key, _ in items for c in crops]
        for key, row in zip(keys, ids, strict=True):
            self._ids[key] = row.clone()


def image_key(path: Path, root: Path) -> str:
    """The token-cache key of an image: its path relative to the dataset folder ``root`` (POSIX), or
    the whole path for an image outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def fingerprint(tokenizer: AnyVisualTokenizer) -> str:
    """SHA-256 over the tokenizer config and weights (16 hex digits)."""
    h = hashlib.sha256(json.dumps(tokenizer.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class ReportDataset(Dataset[Study]):
    """Studies from :class:`Record` objects: image loading, transforms, report ids, token cache.

    Args:
        records: the studies of one split.
        root: folder the image keys of the token cache are made relative to.
        tokenizer: text tokenizer (``encode`` cleans, maps and truncates the report).
        n_views: views per study fed to the model (2 IU-Xray, 1 MIMIC-CXR).
        image_size: S, side of the model input in pixels.
        train: random ``S`` crop of the ``S * 8 / 7`` resize (or a random fixed crop from the token
            cache) instead of the plain resize to ``S``.
        token_cache: visual tokens instead of images in the items.
        seed: augmentation seed; item ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])`` so
            augmentation is reproducible across DataLoader workers and resumes.
    """

    def __init__(
        self,
        records: Sequence[Record],
        root: str | Path,
        tokenizer: TextTokenizer,
        n_views: int,
        image_size: int,
        train: bool,
        token_cache: VisualTokenCache | None = None,
        seed: int = 0,
    ) -> None:
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        if token_cache is not None and token_cache.image_size != image_size:
            raise ValueError(
                f"token cache is for {token_cache.image_size} px images, dataset uses {image_size}"
            )
        self.records = list(records)
        self.root = Path(root)
        self.tokenizer = tokenizer
        self.n_views = n_views
        self.image_size = image_size
        self.train = train
        self.token_cache = token_cache
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = epoch

    def view_paths(self, record: Record) -> list[Path]:
        """The ``n_views`` image files of ``record`` (first image repeated when it has fewer)."""
        if not record.image_paths:
            raise ValueError(f"study {record.id} has no image")
        paths = list(record.image_paths[: self.n_views])
        return paths + [paths[0]] * (self.n_views - len(paths))

    def _image_key(self, path: Path) -> str:
        return image_key(path, self.root)

    def __getitem__(self, index: int) -> Study:
        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        ids = torch.tensor(self.tokenizer.encode(record.report), dtype=torch.long)
        paths = self.view_paths(record)
        if self.token_cache is not None:
            cache = self.token_cache
            crops = [int(rng.integers(cache.n_crops)) if self.train else None for _ in paths]
            tokens = torch.stack(
                [cache.get(self._image_key(p), p, c) for p, c in zip(paths, crops, strict=True)]
            )
            return Study(record.id, [], record.report, ids, record.labels, tokens)  # tokens (V, L)
        images = []
        for p in paths:
            img = load_image(p)
            if self.train:
                m = train_resize(self.image_size) - self.image_size
                top, left = (int(v) for v in rng.integers(0, m + 1, size=2))
                images.append(crop(img, self.image_size, top, left))
            else:
                images.append(to_tensor(img, self.image_size))
        return Study(record.id, images, record.report, ids, record.labels)

    def precompute_tokens(
        self,
        save: bool = True,
        batch_size: int = 16,
        progress: bool | None = None,
        save_every: int = 2048,
    ) -> int:
        """Fill the token cache for every image of this dataset (all crops), ``batch_size`` images
        per tokenizer call; returns images encoded. ``progress``: show the bar (True, also in a
        training log that is not a terminal), hide it (False), or show it on a terminal only (None).
        With ``save``, the cache file is also written after every ``save_every`` images, so an
        interrupted fill (tens of minutes for 20000 views on a CPU) resumes where it stopped.

        Run it before training with DataLoader workers: entries computed inside workers are lost.
        """
        if self.token_cache is None:
            raise ValueError("dataset has no token cache")
        cache = self.token_cache
        paths = {p for r in self.records for p in self.view_paths(r)}
        todo = [(k, p) for p in sorted(paths) if cache.key(k := self._image_key(p), None) not in cache]
        disable = None if progress is None else not progress
        saving = save and cache.path is not None
        since_save = 0
        with tqdm(total=len(todo), desc="visual tokens", unit="img", disable=disable) as bar:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                cache.fill_many(chunk)
                bar.update(len(chunk))
                since_save += len(chunk)
                if saving and since_save >= save_every and start + batch_size < len(todo):
                    cache.save()
                    since_save = 0
        if saving and todo:
            cache.save()
        return len(todo)


def read_annotation(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read an R2Gen ``annotation.json`` and check its shape (split lists of entries)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation not found: {path}")
    ann = json.loads(path.read_text())
    if not isinstance(ann, dict) or not any(s in ann for s in SPLITS):
        raise ValueError(f"{path}: expected an object with 'train' / 'val' / 'test' lists")
    for split, entries in ann.items():
        if not isinstance(entries, list):
            raise ValueError(f"{path}: split {split!r} is not a list")
        for e in entries:
            missing = {"id", "report", "image_path"} - set(e)
            if missing:
                raise ValueError(f"{path}: entry {e.get('id', '?')!r} lacks {sorted(missing)}")
    return ann


def _resolve_image(root: Path, rel: str) -> Path:
    """``ROOT/images/rel`` (R2Gen layout) or ``ROOT/rel``, whichever exists."""
    for candidate in (root / "images" / rel, root / rel):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"image {rel!r} not found under {root / 'images'} or {root}")


class R2GenDataset(ReportDataset):
    """One split of an R2Gen-format dataset folder (``annotation.json`` + ``images/``).

    Args:
        root: dataset folder.
        split: "train", "val" or "test".
        tokenizer, n_views, image_size, train, token_cache, seed: see :class:`ReportDataset`.
        annotation: annotation file if not ``ROOT/annotation.json``.

    Raises:
        FileNotFoundError: missing annotation or image file (checked when the dataset is built).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        tokenizer: TextTokenizer,
        n_views: int,
        image_size: int,
        train: bool,
        token_cache: VisualTokenCache | None = None,
        *,
        seed: int = 0,
        annotation: str | Path | None = None,
    ) -> None:
        root = Path(root)
        ann = read_annotation(annotation or root / "annotation.json")
        if split not in ann:
            raise ValueError(f"split {split!r} not in annotation (has {sorted(ann)})")
        records = [
            Record(
                id=str(e["id"]),
                image_paths=tuple(_resolve_image(root, p) for p in e["image_path"]),
                report=e["report"],
                labels=e.get("labels"),
            )
            for e in ann[split]
        ]
        super().__init__(records, root, tokenizer, n_views, image_size, train, token_cache, seed)
