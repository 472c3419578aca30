"""Generation latency, FLOPs and KV-cache speed-up of the default-size UAR and Base models.

One run prints, side by side for UAR (LSU visual tokenizer + CRA + TIR) and Base (EfficientNet-Lite0
CNN, no CRA / TIR), both random-init at the default ``UARConfig()`` size:

- per-study latency: two views, beam 3, reports forced to 60 tokens (eos blocked), including the
  visual tokenizer (UAR: the semantic tokenizer's frozen EfficientNet-Lite0 trunk on 224 px views, or
  the pixel VQ-VAE on 112 px views with ``--tokenizer pixel``) or the CNN (Base, 112 px) forward;
  median over ``--studies`` studies after warm-up,
  ``torch.set_num_threads(--threads)`` (default 2); in fp32 and with int8 decoding
  (``uar.modules.attention.int8_decoding``: int8 weight copies for the decoding steps' products);
  UAR with its memo of aligned word embeddings (``UAR.word_memo``, as a running generator keeps it;
  the warm-up studies start it empty; its hit rate is printed) and with the memo off;
- FLOPs per study (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions, attention)
  against this machine's measured fp32 matmul GFLOP/s;
- decoding with the key/value cache against recomputing the whole prefix every step (memo off);
- the embedded default model (or ``--checkpoint``) as the application runs it:
  ``ReportGenerator.generate(frontal, lateral)`` on two 512 x 512 views (resize, visual tokenizer or
  CNN, beam 3, its own stopping), median over the same number of studies.

Targets (issue 2): <= 0.3 s per study median on 2 cores; cache >= 5x faster than no cache.

Usage: ``python benchmarks/generate.py [--studies 20] [--threads 2] [--tokenizer semantic|pixel]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from uar.config import UARConfig, preset
from uar.generation import beam_search
from uar.generator import ReportGenerator
from uar.model import UAR
from uar.modules.attention import int8_decoding
from uar.modules.memo import TokenMemo
from uar.visual.semantic import SemanticConfig, SemanticTokenizer
from uar.visual.vqvae import VisualTokenizer, VQConfig

TOKENS = 60
BEAM = 3


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 GFLOP/s of an n x n @ n x n matmul (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def median_seconds(fn: Callable[[torch.Tensor], object], studies: list[torch.Tensor], warmup: int) -> float:
    """Median wall time of ``fn(study)`` over ``studies`` after ``warmup`` untimed calls."""
    for study in studies[:warmup]:
        fn(study)
    times = []
    for study in studies:
        t0 = time.perf_counter()
        fn(study)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_gflop(fn: Callable[[torch.Tensor], object], study: torch.Tensor) -> float:
    """GFLOP of one ``fn(study)`` call."""
    with FlopCounterMode(display=False) as counter:
        fn(study)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20, help="timed studies per model (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed studies first (default 3)")
    parser.add_argument("--uncached-studies", type=int, default=5, help="studies for the no-cache timing")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument(
        "--tokenizer", choices=("semantic", "pixel"), default="semantic", help="UAR's visual tokenizer"
    )
    parser.add_argument("--checkpoint", help="model of the last row (default: the embedded default model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.tokenizer == "semantic":
        tokenizer: torch.nn.Module = SemanticTokenizer(
            SemanticConfig(codebook_size=UARConfig.visual_vocab_size)
        )
        tokenizer.codebook.copy_(torch.nn.functional.normalize(torch.randn_like(tokenizer.codebook), dim=1))
    else:
        tokenizer = VisualTokenizer(VQConfig(codebook_size=UARConfig.visual_vocab_size)).eval()
    size = tokenizer.config.image_size
    cfg = UARConfig(image_size=size, tokens_per_view=tokenizer.config.tokens_per_image)
    uar = UAR(cfg).eval()
    uar.stage = 2  # TIR mask active, as after two-stage training
    base = UAR(preset("base")).eval()
    studies = [torch.rand(1, cfg.n_views, 1, size, size) for _ in range(args.studies)]
    base_size = preset("base").image_size
    base_studies = [torch.rand(1, cfg.n_views, 1, base_size, base_size) for _ in range(args.studies)]

    def run_uar(images: torch.Tensor, use_cache: bool = True) -> list[list[int]]:
        with torch.inference_mode():
            ids = tokenizer.encode(images.flatten(0, 1)).view(1, cfg.n_views, -1)  # (1, V, L)
        return beam_search(uar, ids, BEAM, max_len=TOKENS, min_len=TOKENS, use_cache=use_cache)

    def encode_uar(images: torch.Tensor) -> None:
        with torch.inference_mode():
            uar.encode(tokenizer.encode(images.flatten(0, 1)).view(1, cfg.n_views, -1))

    def run_base(images: torch.Tensor) -> list[list[int]]:
        return beam_search(base, images, BEAM, max_len=TOKENS, min_len=TOKENS)

    def run_tokenizer(images: torch.Tensor) -> None:
        with torch.inference_mode():
            tokenizer.encode(images.flatten(0, 1))

    gflops = matmul_gflops()
    rows = []
    hit_rate = 0.0
    models = (
        ("UAR", run_uar, True, studies),
        ("UAR no memo", run_uar, False, studies),
        ("Base", run_base, False, base_studies),
    )
    for name, fn, memo, inputs in models:
        for int8 in (False, True):
            uar.word_memo = TokenMemo() if memo else TokenMemo(capacity=0)
            with int8_decoding(int8):
                latency = median_seconds(fn, inputs, args.warmup)
            if not int8:
                if memo:
                    hit_rate = uar.word_memo.hits / max(1, uar.word_memo.hits + uar.word_memo.misses)
                work = count_gflop(fn, inputs[0])  # fp32 (with the memo: as warm as after the timing)
            rows.append((f"{name} int8" if int8 else name, latency, work))
    generator = ReportGenerator.load(args.checkpoint)
    views = [(torch.rand(512, 512).numpy(), torch.rand(512, 512).numpy()) for _ in range(args.studies)]

    def run_generator(study: tuple) -> None:
        generator.generate(*study)

    latency = median_seconds(run_generator, views, args.warmup)
    rows.append((f"{generator.name} {generator.version}", latency, count_gflop(run_generator, views[0])))
    latency = median_seconds(run_tokenizer, studies, args.warmup)
    rows.append((f"{args.tokenizer} tokenizer", latency, count_gflop(run_tokenizer, studies[0])))
    uar.word_memo = TokenMemo(capacity=0)
    few = studies[: args.uncached_studies]
    cached = median_seconds(run_uar, few, 1)
    uncached = median_seconds(lambda s: run_uar(s, use_cache=False), few, 1)
    encode = median_seconds(encode_uar, few, 1)

    print(
        f"threads={args.threads}  studies={args.studies}  beam={BEAM}  tokens={TOKENS}  views={cfg.n_views}"
        f"  UAR tokenizer={args.tokenizer} ({size} px, {cfg.tokens_per_view} tokens/view)"
    )
    print(f"measured fp32 matmul (1024^3): {gflops:.1f} GFLOP/s")
    print(f"{'model':<16} {'median s/study':>15} {'GFLOP/study':>12} {'ideal s':>8} {'matmul eff.':>11}")
    for name, latency, work in rows:
        ideal = work / gflops
        print(f"{name:<16} {latency:>15.3f} {work:>12.2f} {ideal:>8.3f} {ideal / latency:>10.0%}")
    print(f"UAR word memo (fp32 run, warm-up included): {hit_rate:.0%} of the decoded words found")
    print(
        f"UAR, cache vs no cache ({len(few)} studies): whole generation {cached:.3f} s vs {uncached:.3f} s"
        f" = {uncached / cached:.1f}x; decoding alone (minus {encode:.3f} s encoding)"
        f" {(uncached - encode) / (cached - encode):.1f}x"
    )
    ok_cache = (uncached - encode) / (cached - encode) >= 5
    verdicts = ", ".join(f"{name} {'met' if latency <= 0.3 else 'NOT met'}" for name, latency, _ in rows[:-1])
    print(
        f"targets: <= 0.3 s/study: {verdicts};"
        f" decoding with cache (fp32) >= 5x faster {'met' if ok_cache else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
