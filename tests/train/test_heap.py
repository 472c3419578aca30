"""The glibc mmap-threshold fix keeps the visual-token cache fill from growing the heap per image."""

from __future__ import annotations

import subprocess
import sys

from uar.heap import fix_mmap_threshold

# Fills a token cache (full view + 5 crops per image) with a default-size tokenizer (1024 codes: a
# 4.8 MB distance matrix per image) on rendered synthetic radiographs; prints the max-RSS growth.
FILL = """
import resource, sys
import numpy as np, torch
from uar.data.r2gen import VisualTokenCache
from uar.synthetic.render import render
from uar.synthetic.sampling import sample_case
from uar.heap import fix_mmap_threshold
from uar.visual.vqvae import VisualTokenizer, VQConfig

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
torch.set_num_threads(1)
torch.manual_seed(0)
cache = VisualTokenCache(VisualTokenizer(VQConfig()), None, n_crops=5)
images = [render(sample_case(np.random.default_rng(i)), "frontal", size=256) for i in range(20)]
start = 0
for i in range(130):
    if i == 10:  # after warm-up (first-call allocations)
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    img = images[i % 20].copy()  # a fresh image array per fill, as when reading files
    crops = [None, *range(cache.n_crops)]
    ids = cache.tokenizer.encode(torch.stack([cache.view(img, c) for c in crops]))
    for c, row in zip(crops, ids):
        cache._ids[f"{i}|{c}"] = row.clone()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024)
"""


def test_fix_is_applied_on_linux() -> None:
    assert fix_mmap_threshold() is sys.platform.startswith("linux")


def test_token_cache_fill_keeps_memory_flat() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FILL, "fixed"], capture_output=True, text=True, check=True, timeout=300
    )
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    # Measured: ~930 MB without the fix (~7 MB per fill), ~50 MB with it.
    assert growth_mb < 150, f"max RSS grew by {growth_mb:.0f} MB over 120 cache fills"
