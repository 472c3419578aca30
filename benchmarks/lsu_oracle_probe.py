"""Can the LSU pipeline learn from visual tokens that carry the findings? An oracle-token probe.

The visual tokens of each study are replaced by "oracle" tokens: random codes everywhere, except that
the finding labels are written as tokens (finding k positive -> code 16 + 2k + 1, otherwise 16 + 2k)
either at the first positions of the first view only (``--layout sparse``: 14 informative tokens
among 392) or at every position (``--layout dense``). A fresh model of the checkpoint's architecture
(``--preset`` applied on top) is trained for ``--steps`` steps with the stage-1 losses (batch 16,
AdamW as ``TrainConfig``, gradient clip 0.1) on the split ``train`` of an R2Gen-layout set with
``labels``; the result is the teacher-forced cross-entropy on the split ``val`` with each study's
tokens and with the tokens of another study of the same batch. A gap means the model reads them.

Usage: ``python benchmarks/lsu_oracle_probe.py runs/default/data --checkpoint
runs/default/ablations/uar/best.safetensors [--preset uar] [--layout sparse] [--steps 600]``.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from uar.checkpoint import load_checkpoint
from uar.config import PRESETS, TrainConfig, UARConfig
from uar.data.r2gen import Study, collate
from uar.model import UAR
from uar.text.tokenizer import TextTokenizer

FIRST_CODE = 16  # oracle codes start here (any code below the codebook size would do)


def oracle_tokens(
    labels: dict[str, int | None], cfg: UARConfig, layout: str, gen: torch.Generator
) -> torch.Tensor:
    """(V, L) token ids: random codes with the labels written as tokens (see the module docstring)."""
    ids = torch.randint(0, cfg.visual_vocab_size, (cfg.n_views, cfg.tokens_per_view), generator=gen)
    code = torch.tensor([FIRST_CODE + 2 * k + int(v == 1) for k, v in enumerate(labels.values())])
    if int(code.max()) >= cfg.visual_vocab_size:
        raise ValueError(f"{len(labels)} findings need codes up to {int(code.max())}: codebook too small")
    if layout == "sparse":
        ids[0, : len(code)] = code
    else:
        n = cfg.n_views * cfg.tokens_per_view
        ids[:] = code.repeat(n // len(code) + 1)[:n].view_as(ids)
    return ids


def encode_split(
    studies: list[dict], cfg: UARConfig, tok: TextTokenizer, layout: str, seed: int
) -> list[Study]:
    """The studies of a split with oracle tokens (V, L) in place of images, for :func:`collate`."""
    gen = torch.Generator().manual_seed(seed)
    return [
        Study(s["id"], [], s["report"], torch.tensor(tok.encode(s["report"]), dtype=torch.long),
              s["labels"], oracle_tokens(s["labels"], cfg, layout, gen))
        for s in studies
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="R2Gen-layout folder whose annotation.json has labels")
    parser.add_argument("--checkpoint", type=Path, required=True, help="architecture and vocabulary")
    parser.add_argument("--preset", default="uar", choices=sorted(PRESETS))
    parser.add_argument("--layout", default="sparse", choices=("sparse", "dense"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = replace(ckpt.cfg, **PRESETS[args.preset], visual_encoder="lsu")
    annotation = json.loads((args.data / "annotation.json").read_text(encoding="utf-8"))
    train = encode_split(annotation["train"], cfg, ckpt.text_tokenizer, args.layout, 1)
    val = encode_split(annotation["val"], cfg, ckpt.text_tokenizer, args.layout, 2)
    model = UAR(cfg)
    tc = TrainConfig()
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=tc.lr,
        betas=tc.betas,
        eps=tc.eps,
        weight_decay=tc.weight_decay,
        amsgrad=tc.amsgrad,
    )
    batch_size = min(16, len(train))
    for _ in tqdm(range(args.steps), desc=f"{args.preset} {args.layout}", unit="step"):
        batch = collate([train[i] for i in rng.sample(range(len(train)), batch_size)])
        loss = model(batch.visual, batch.reports, stage=1)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
    model.eval()

    def val_ce(shuffle: bool) -> float:
        total = 0.0
        chunks = range(0, len(val), 50)
        with torch.no_grad():
            for i in chunks:
                batch = collate(val[i : i + 50])
                visual = batch.visual
                if shuffle:  # another study's tokens: a rotation never leaves a study its own
                    visual = visual.roll(1, dims=0)
                total += float(model(visual, batch.reports, stage=1)["ce"])
        return total / len(chunks)

    own, other = val_ce(False), val_ce(True)
    print(f"{args.preset} ({args.layout} oracle tokens, {args.steps} steps), validation CE per word:")
    print(f"own tokens {own:.4f}, another study's tokens {other:.4f}, gap {other - own:.4f}")


if __name__ == "__main__":
    main()
