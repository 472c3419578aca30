"""Training, evaluation, saving and loading of the VQ-VAE visual tokenizer.

``uar tokenizer train`` calls :func:`train_tokenizer`. The images are preloaded once, resized to the
training side ``S * 8 / 7`` and kept as uint8 (16 KiB per image at 128 px); every epoch draws new
random ``S`` crops, exactly the augmentation UAR itself trains with. Evaluation uses the centre crop.

File format: one ``.safetensors`` file with the ``VisualTokenizer`` state dict and metadata
``format`` = ``uar-visual-tokenizer/1`` and ``vq_config`` = the :class:`VQConfig` as JSON.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from uar.data.images import find_images, load_image, resize, train_resize
from uar.visual.kinds import AnyVisualTokenizer, build_visual_tokenizer
from uar.visual.vqvae import VisualTokenizer, VQConfig, code_perplexity

__all__ = [
    "FORMAT",
    "TokenizerReport",
    "collect_image_paths",
    "evaluate_tokenizer",
    "load_visual_tokenizer",
    "save_visual_tokenizer",
    "train_tokenizer",
]

log = logging.getLogger(__name__)

FORMAT = "uar-visual-tokenizer/1"


@dataclass
class TokenizerReport:
    """Outcome of :func:`train_tokenizer`; MSE and PSNR on centre crops of pixels in [0, 1]."""

    out_path: str
    grid_path: str
    n_images: int
    eval_on: str  # "held-out" (eval_paths given) or "training" (centre crops of training images)
    n_eval_images: int
    epochs: int
    steps: int
    initial_mse: float  # before training
    mse: float  # after training
    psnr_db: float  # 10 log10(1 / mse)
    perplexity: float  # exp(entropy) of the code histogram over the evaluation images
    codes_used: int  # distinct codes over the evaluation images
    usage: float  # codes_used / codebook_size
    seconds: float

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain-JSON form."""
        return asdict(self)


def collect_image_paths(src: str | Path, split: str | None = "train") -> list[Path]:
    """Image files of ``src``: a folder (recursive PNG / JPEG / DICOM) or an R2Gen ``annotation.json``.

    For an annotation, ``image_path`` entries are resolved against the annotation's folder and its
    ``images/`` sub-folder (R2Gen layout); ``split`` picks one split (None: all splits).

    Raises:
        FileNotFoundError: ``src`` does not exist, or an annotated image is missing.
        ValueError: no image found.
    """
    src = Path(src)
    if src.is_dir():
        paths = list(find_images(src))
    elif src.is_file() and src.suffix.lower() == ".json":
        ann = json.loads(src.read_text())
        splits = [split] if split is not None else list(ann)
        paths = []
        for name in splits:
            for entry in ann.get(name, []):
                paths += [_resolve(src.parent, p) for p in entry["image_path"]]
    elif src.exists():
        raise ValueError(f"{src}: expected a folder of images or an annotation.json")
    else:
        raise FileNotFoundError(f"image source not found: {src}")
    if not paths:
        raise ValueError(f"no images found in {src}")
    return paths


def _resolve(root: Path, rel: str) -> Path:
    """``root / rel`` or ``root / images / rel``, whichever exists."""
    for candidate in (root / rel, root / "images" / rel):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"annotated image not found: {rel} (looked in {root} and {root / 'images'})")


def _preload(paths: Sequence[Path], side: int) -> torch.Tensor:
    """Load and resize every image to ``side`` -> uint8 tensor (N, 1, side, side)."""
    out = torch.empty((len(paths), 1, side, side), dtype=torch.uint8)
    for i, p in enumerate(tqdm(paths, desc="loading images", unit="img", disable=None)):
        out[i] = (resize(load_image(p), side) * 255.0).round().to(torch.uint8)
    return out


def _random_crops(big: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One random ``size`` crop per image of ``big`` (B, 1, side, side) uint8 -> float (B, 1, size, size)."""
    margin = big.shape[-1] - size
    offsets = rng.integers(0, margin + 1, size=(big.shape[0], 2))
    crops = [img[:, t : t + size, x : x + size] for img, (t, x) in zip(big, offsets, strict=True)]
    return torch.stack(crops).float() / 255.0


def _centre_crops(big: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size`` crops of ``big`` (N, 1, side, side) uint8 -> float (N, 1, size, size)."""
    m = (big.shape[-1] - size) // 2
    return big[:, :, m : m + size, m : m + size].float() / 255.0


@torch.no_grad()
def evaluate_tokenizer(tok: VisualTokenizer, images: torch.Tensor, batch: int = 64) -> dict[str, float]:
    """Reconstruction MSE / PSNR (dB) and code perplexity / usage of ``images`` (N, 1, S, S) in [0, 1]."""
    tok.eval()
    sq_err, ids = 0.0, []
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch]
        codes = tok.encode(x)  # (b, L)
        sq_err += float(((tok.decode(codes) - x) ** 2).sum())
        ids.append(codes)
    all_ids = torch.cat(ids)
    mse = sq_err / images.numel()
    k = tok.config.codebook_size
    used = int(torch.unique(all_ids).numel())
    return {
        "mse": mse,
        "psnr_db": 10.0 * math.log10(1.0 / max(mse, 1e-12)),
        "perplexity": float(code_perplexity(all_ids, k)),
        "codes_used": used,
        "usage": used / k,
    }


def save_grid(tok: VisualTokenizer, images: torch.Tensor, path: Path, n: int = 8) -> Path:
    """Write a PNG: row pairs of ``n`` originals above their reconstructions (uint8 grey)."""
    tok.eval()
    with torch.no_grad():
        x = images[:n]
        recon = tok.decode(tok.encode(x))
    rows = [torch.cat(list(x[:, 0]), dim=1), torch.cat(list(recon[:, 0]), dim=1)]  # 2 x (S, n*S)
    grid = (torch.cat(rows, dim=0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def train_tokenizer(
    image_paths: Sequence[str | Path],
    out_path: str | Path,
    cfg: VQConfig | None = None,
    epochs: int = 20,
    *,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    eval_paths: Sequence[str | Path] | None = None,
    max_eval_images: int = 512,
) -> TokenizerReport:
    """Train a :class:`VisualTokenizer` on ``image_paths`` and save it to ``out_path``.

    Adam on encoder and decoder (the codebook follows by EMA), random ``S`` crops of the
    ``S * 8 / 7`` resize, seeded with ``seed``. Writes ``out_path`` (safetensors) and
    ``<out stem>.recon.png`` beside it (originals above reconstructions).

    The metrics are computed on centre crops of at most ``max_eval_images`` of ``eval_paths``
    (held-out images) or, without them, of the training images.

    Returns:
        A :class:`TokenizerReport` with the MSE before and after training, PSNR, perplexity and usage.
    """
    cfg = cfg or VQConfig()
    out_path = Path(out_path)
    if not image_paths:
        raise ValueError("no training images")
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    side = train_resize(cfg.image_size)
    big = _preload([Path(p) for p in image_paths], side)  # (N, 1, side, side)
    if eval_paths:
        chosen = rng.permutation(len(eval_paths))[:max_eval_images]
        eval_big = _preload([Path(eval_paths[i]) for i in chosen], side)
    else:
        eval_big = big[torch.from_numpy(rng.permutation(big.shape[0])[:max_eval_images])]
    eval_images = _centre_crops(eval_big, cfg.image_size)  # (E, 1, S, S)

    tok = VisualTokenizer(cfg)
    with torch.no_grad():  # seed the codebook from data so that the "before" error is meaningful
        tok.train()
        tok(eval_images[:batch_size])
    initial = evaluate_tokenizer(tok, eval_images)
    optimizer = torch.optim.Adam([p for p in tok.parameters() if p.requires_grad], lr=lr)
    n, steps = big.shape[0], 0
    for epoch in range(epochs):
        tok.train()
        order = rng.permutation(n)
        bar = tqdm(range(0, n, batch_size), desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=None)
        for i in bar:
            x = _random_crops(big[torch.from_numpy(order[i : i + batch_size])], cfg.image_size, rng)
            out = tok(x)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            steps += 1
            bar.set_postfix(mse=f"{float(out.mse):.4f}", ppl=f"{float(out.perplexity):.0f}")
    final = evaluate_tokenizer(tok, eval_images)
    save_visual_tokenizer(out_path, tok)
    grid = save_grid(tok, eval_images, out_path.with_name(out_path.stem + ".recon.png"))
    report = TokenizerReport(
        out_path=str(out_path),
        grid_path=str(grid),
        n_images=n,
        eval_on="held-out" if eval_paths else "training",
        n_eval_images=eval_images.shape[0],
        epochs=epochs,
        steps=steps,
        initial_mse=initial["mse"],
        mse=final["mse"],
        psnr_db=final["psnr_db"],
        perplexity=final["perplexity"],
        codes_used=int(final["codes_used"]),
        usage=final["usage"],
        seconds=time.perf_counter() - start,
    )
    log.info(
        "visual tokenizer (%s images): MSE %.5f -> %.5f (PSNR %.2f dB), perplexity %.1f, %d/%d codes used",
        report.eval_on,
        report.initial_mse,
        report.mse,
        report.psnr_db,
        report.perplexity,
        report.codes_used,
        cfg.codebook_size,
    )
    return report


def save_visual_tokenizer(path: str | Path, tok: AnyVisualTokenizer) -> None:
    """Save ``tok`` (either kind) as safetensors (state dict + ``vq_config`` JSON metadata: the
    config, with ``kind`` for a semantic tokenizer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tok.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "vq_config": json.dumps(tok.config.to_dict())})


def load_visual_tokenizer(path: str | Path) -> AnyVisualTokenizer:
    """Load a tokenizer (either kind) written by :func:`save_visual_tokenizer`, in eval mode on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a visual tokenizer.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"visual tokenizer not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT or "vq_config" not in meta:
        raise ValueError(f"{path}: not a UAR visual tokenizer (format {meta.get('format')!r})")
    tok = build_visual_tokenizer(json.loads(meta["vq_config"]))
    tok.load_state_dict(load_file(str(path)))
    return tok.eval()
