"""Speed of the synthetic data generator (docs/benchmarks.md, section "Synthetic data").

Measures, on one core, the median time to render one view at 112 / 256 / 512 px, to compose one
report from the IU-Xray corpus, to write one DICOM study per transfer syntax (512 px), and the
throughput of ``write_dataset`` (two 256-px PNGs + report per study).

``--probe`` instead measures learnability: a tiny CNN (5 conv blocks, ~100 k parameters) trained
on 3000 cases (frontal + lateral at 112 px, seed 1) and scored on 600 (seed 2), F1 per label at 0.5.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synthetic.py [--cases 40] [--probe [--epochs 16]]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from uar.synthetic.dataset import write_dataset
from uar.synthetic.dicom import TRANSFER_SYNTAXES, write_study
from uar.synthetic.render import render
from uar.synthetic.report import SentenceBank, compose_report
from uar.synthetic.sampling import sample_case

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iu_xray" / "annotation.json"


def _median_ms(fn, items) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _views(n: int, seed: int, observations: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((n, 2, 112, 112), np.float32)  # (N, views, S, S)
    y = np.zeros((n, len(observations)), np.float32)
    for i in range(n):
        case = sample_case(np.random.default_rng([seed, i]))
        x[i, 0], x[i, 1] = render(case, "frontal", size=112), render(case, "lateral", size=112)
        y[i] = [case.labels[o] == 1 for o in observations]
    return x, y


def probe(epochs: int) -> None:
    """Train a tiny CNN on the labels and print micro-F1 and per-label F1 on held-out cases."""
    import torch
    from torch import nn

    from uar.eval.labeler import OBSERVATIONS

    torch.manual_seed(0)
    obs = [o for o in OBSERVATIONS if o != "No Finding"]
    xtr, ytr = (torch.tensor(a) for a in _views(3000, 1, obs))
    xte, yte = _views(600, 2, obs)

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    net = nn.Sequential(
        block(2, 16), block(16, 32), block(32, 48), block(48, 64), block(64, 96),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, len(obs)),
    )  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        for b in range(0, len(xtr), 64):
            idx = perm[b : b + 64]
            loss = nn.functional.binary_cross_entropy_with_logits(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.sigmoid(net(torch.tensor(xte))).numpy() > 0.5
    truth = yte > 0
    tp, fp, fn = (pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0)
    print(f"micro-F1 {2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()):.3f} after {epochs} epochs")
    for k, name in enumerate(obs):
        print(f"| {name} | {truth[:, k].mean():.1%} | {2 * tp[k] / max(2 * tp[k] + fp[k] + fn[k], 1):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--probe", action="store_true", help="learnability probe instead of speed")
    ap.add_argument("--epochs", type=int, default=16)
    args = ap.parse_args()
    if args.probe:
        probe(args.epochs)
        return
    cases = [sample_case(np.random.default_rng([0, i])) for i in range(args.cases)]
    render(cases[0], "frontal", size=64)  # warm-up
    print("| what | median per item |")
    print("|---|---|")
    for size in (112, 256, 512):
        for view in ("frontal", "lateral"):
            ms = _median_ms(lambda c, v=view, s=size: render(c, v, size=s), cases)
            print(f"| render {view} {size} px | {ms:.1f} ms |")
    if CORPUS.is_file():
        t0 = time.perf_counter()
        bank = SentenceBank.from_annotation(CORPUS, "train")
        print(f"| index IU-Xray train sentences (once) | {1000 * (time.perf_counter() - t0):.0f} ms |")
        rng = np.random.default_rng(0)
        ms = _median_ms(lambda c: compose_report(c, bank, rng), cases)
        print(f"| compose report (IU-Xray corpus) | {ms:.1f} ms |")
    rng = np.random.default_rng(0)
    ms = _median_ms(lambda c: compose_report(c, None, rng), cases)
    print(f"| compose report (built-in sentences) | {ms:.1f} ms |")
    with tempfile.TemporaryDirectory() as tmp:
        for syntax in TRANSFER_SYNTAXES:
            ms = _median_ms(
                lambda c, s=syntax: write_study(Path(tmp) / "s", c, 0, size=512, transfer_syntax=s), cases[:8]
            )
            print(f"| DICOM study 512 px, {syntax.name} | {ms:.0f} ms |")
        t0 = time.perf_counter()
        write_dataset(Path(tmp) / "ds", args.cases, seed=0, progress=False)
        per = (time.perf_counter() - t0) / args.cases
        print(
            f"| write_dataset, 256 px PNGs + report | {1000 * per:.0f} ms/study ({1 / per:.1f} studies/s) |"
        )


if __name__ == "__main__":
    main()
