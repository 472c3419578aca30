"""Transcendental functions of the renderer that give the same float32 maps on every x86-64 CPU.

numpy picks its ``exp``, ``sin``, ``cos``, ``arctan2`` and ``power`` loops by the CPU it runs on:
on AVX-512 machines it uses Intel's SVML kernels, whose float32 results differ by an ulp or two
from the AVX2 and scalar loops. A rendered radiograph quantised to 12 bits then differs in a few
pixels, and a seeded dataset is no longer the same bytes on two machines
(``tests/synthetic/test_synthetic_reference.py``). Every function here evaluates in float64 and
rounds to float32: two float64 results that differ by a few float64 ulps round to the same
float32 value except with a probability of about 1e-8 per element, so the maps agree.
Inputs that are already float64 (anatomy coordinates) stay float64.
"""

from __future__ import annotations

import numpy as np


def _f32(x: np.ndarray | float) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.float32


def _apply(fn: np.ufunc, *args: np.ndarray | float) -> np.ndarray:
    """``fn(*args)`` in float64, returned as float32 when any array argument was float32."""
    out = fn(*(np.asarray(a, dtype=np.float64) for a in args))
    return out.astype(np.float32) if any(_f32(a) for a in args) else out


def exp(x: np.ndarray) -> np.ndarray:
    """``np.exp`` with CPU-independent float32 results."""
    return _apply(np.exp, x)


def sin(x: np.ndarray) -> np.ndarray:
    """``np.sin`` (radians) with CPU-independent float32 results."""
    return _apply(np.sin, x)


def cos(x: np.ndarray) -> np.ndarray:
    """``np.cos`` (radians) with CPU-independent float32 results."""
    return _apply(np.cos, x)


def arctan2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.arctan2`` (radians) with CPU-independent float32 results."""
    return _apply(np.arctan2, y, x)


def power(x: np.ndarray, p: float) -> np.ndarray:
    """``x ** p`` for a non-integer exponent, with CPU-independent float32 results."""
    return _apply(np.power, x, p)
