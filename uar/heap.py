"""glibc heap setting for long-running CPU processes (training, the node's workers).

glibc raises its mmap threshold every time a large ``mmap``-backed block is freed, so after a few
steps the large temporaries of a forward pass (distance matrices, activations: megabytes) are carved
out of the ``brk`` heap instead. A small long-lived allocation (a cached token row, a tensor header)
that lands inside such a freed region splits it, the next large temporary no longer fits and the heap
grows again: filling the visual-token cache grew by ~5 MB per image this way (16 GB for 9400
images). A fixed threshold keeps large blocks in ``mmap`` (returned to the system on free) and
stops the growth.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
DEFAULT_THRESHOLD = 1 << 20  # bytes: blocks from 1 MiB up are mmap-backed


def fix_mmap_threshold(n_bytes: int = DEFAULT_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``n_bytes`` (disabling its dynamic growth) for this process.

    Returns True when set; False off Linux/glibc (nothing to do there). Safe to call more than once.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, n_bytes))
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
