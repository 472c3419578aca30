"""JPEG Lossless, Non-Hierarchical, First-Order Prediction (ITU T.81 Process 14, Selection Value 1).

pydicom can decode but not encode this transfer syntax (1.2.840.10008.1.2.4.70, JPEG Lossless SV1);
:func:`encode_jpeg_lossless_sv1` writes its codestream with one optimal Huffman table. The output
decodes bit-exactly with pylibjpeg and dcmtk's ``dcmdjpeg``.
"""

from __future__ import annotations

import heapq

import numpy as np


def _huffman_lengths(freq: dict[int, int]) -> dict[int, int]:
    """Code lengths (<= 16 bits) for the symbols in ``freq``; one extra dummy leaf keeps the
    all-ones code unused (ITU T.81 K.2)."""
    heap: list[tuple[int, int, list[int]]] = [(f, s, [s]) for s, f in freq.items()]
    heap.append((0, 99, [-1]))
    heapq.heapify(heap)
    depth = dict.fromkeys([*freq, -1], 0)
    while len(heap) > 1:
        f1, s1, a = heapq.heappop(heap)
        f2, s2, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (f1 + f2, min(s1, s2), a + b))
    depth.pop(-1)
    if max(depth.values()) > 16:  # pathological histograms: flat 5-bit codes for SSSS 0..16
        return dict.fromkeys(range(17), 5)
    return depth


def encode_jpeg_lossless_sv1(pixels: np.ndarray, precision: int) -> bytes:
    """Encode a (H, W) unsigned image as a JPEG Lossless SV1 codestream (ITU T.81 Process 14).

    ``precision`` (2-16) is the sample precision P in the SOF3 marker; values must be < 2**P.
    Prediction: first sample 2**(P-1), first row left neighbour, first column upper neighbour,
    elsewhere the left neighbour (selection value 1); point transform 0. One optimal Huffman
    table. Returns bytes from SOI to EOI.
    """
    if pixels.ndim != 2:
        raise ValueError(f"expected a (H, W) image, got shape {pixels.shape}")
    if not 2 <= precision <= 16:
        raise ValueError(f"precision must be 2-16 bits, got {precision}")
    x = pixels.astype(np.int64)
    if x.min() < 0 or x.max() >= 1 << precision:
        raise ValueError(f"pixel values must lie in [0, 2**{precision})")
    h, w = x.shape
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[0, 0] = 1 << (precision - 1)
    diff = (x - pred).ravel() % 65536
    diff = np.where(diff > 32768, diff - 65536, diff)  # (N,) in [-32767, 32768]
    mag = np.abs(diff)
    ssss = np.zeros(mag.shape, dtype=np.int64)
    nz = mag > 0
    ssss[nz] = np.frexp(mag[nz])[1]  # bit length: exact, unlike log2
    ssss[mag == 32768] = 16
    extra = np.where(diff >= 0, diff, diff - 1) & ((1 << ssss) - 1)
    extra[ssss == 16] = 0
    # Huffman table (canonical codes in order of length, then symbol)
    symbols, counts = np.unique(ssss, return_counts=True)
    lengths = _huffman_lengths({int(s): int(c) for s, c in zip(symbols, counts, strict=True)})
    order = sorted(lengths, key=lambda s: (lengths[s], s))
    code_of = np.zeros(17, dtype=np.int64)
    len_of = np.zeros(17, dtype=np.int64)
    code, prev = 0, lengths[order[0]]
    for s in order:
        code <<= lengths[s] - prev
        prev = lengths[s]
        code_of[s], len_of[s] = code, lengths[s]
        code += 1
    bits_count = [sum(1 for s in order if lengths[s] == n) for n in range(1, 17)]
    # bit packing: each sample gives (Huffman code, SSSS extra bits), at most 32 bits together
    nbits = len_of[ssss] + np.where(ssss == 16, 0, ssss)
    value = (code_of[ssss] << np.where(ssss == 16, 0, ssss)) | extra
    aligned = (value << (32 - nbits)).astype(">u4")
    bitmat = np.unpackbits(aligned.view(np.uint8).reshape(-1, 4), axis=1)  # (N, 32)
    stream = bitmat[np.arange(32)[None, :] < nbits[:, None]]
    pad = (-len(stream)) % 8
    stream = np.concatenate([stream, np.ones(pad, dtype=np.uint8)])
    data = np.packbits(stream)
    ff = np.flatnonzero(data == 0xFF)
    data = np.insert(data, ff + 1, 0)  # byte stuffing
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision])
    out += h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    huff = bytes([0x00, *bits_count, *order])
    out += b"\xff\xc4" + (2 + len(huff)).to_bytes(2, "big") + huff
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])
    out += data.tobytes() + b"\xff\xd9"
    return bytes(out)
