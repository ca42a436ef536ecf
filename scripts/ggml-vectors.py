#!/usr/bin/env python3
"""Test vectors for host/import/ggml.rs, produced by the reference NumPy dequantizers of gguf-py.

Run with a Python that has gguf==0.19.0 and numpy (e.g. a venv: pip install gguf==0.19.0 numpy):

    python3 scripts/ggml-vectors.py            # writes tests/data/ggml/

For every type it writes tests/data/ggml/<TYPE>.bin:

    u32 type id, u32 n_blocks              (little-endian)
    n_blocks * bytes_per_block raw bytes
    n_blocks * elements_per_block f32      (little-endian) = gguf.quants.dequantize(raw, type)

The blocks are: random bytes with finite, moderate f16 scale fields (f16 of N(0,1)*0.01, some
N(0,1)*10), hand-made extreme-but-finite blocks (all-ones bytes with scales of +-65504, all-zero
quants, subnormal and signed-zero scales), and, where gguf-py has a quantizer for the type, blocks
from gguf.quants.quantize of heavy-tailed float data.

tests/data/ggml/nonfinite/<TYPE>.bin has the same format, for the block types only, with inf / quiet NaN /
signalling NaN scale fields (the Rust test compares these with NaN treated as one value, see there).

vectors/exhaustive.txt holds, for F16 and BF16, an FNV-1a-64 hash of the little-endian f32 bytes
of the dequantization of all 65536 bit patterns (u16 0..=65535 in order), so that every pattern,
NaN payloads included, is checked without storing 256 KB per type.

Q8_K has no dequantizer in gguf-py (llama.cpp uses it only for activations); its expected values
are computed here with the formula of llama.cpp's dequantize_row_q8_K (y = d * qs, float32).
Q8_1 is left out: gguf-py has no dequantizer for it and its GGML_QUANT_SIZES entry (32, 40) is the
old float layout, while ggml's block_q8_1 is 36 bytes (two f16 + 32 int8).
"""
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
import gguf.quants as gq

from importlib.metadata import version as _version

if _version("gguf") != "0.19.0":
    print(f"warning: gguf {_version('gguf')} installed; the vectors were made with 0.19.0", file=sys.stderr)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ggml")
rng = np.random.default_rng(20240607)

# Offsets of the f16 scale fields inside each block (ggml-common.h block structs).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],   # scales[16] qs[64] d dmin
    T.Q3_K: [108],      # hmask[32] qs[64] scales[12] d
    T.Q4_K: [0, 2],     # d dmin scales[12] qs[128]
    T.Q5_K: [0, 2],     # d dmin scales[12] qh[32] qs[128]
    T.Q6_K: [208],      # ql[128] qh[64] scales[16] d
    T.IQ4_NL: [0],      # d qs[16]
    T.IQ4_XS: [0],      # d scales_h(u16) scales_l[4] qs[128]
}
F32_FIELDS = {T.Q8_K: [0]}  # float d, int8 qs[256], int16 bsums[16]

BLOCK_TYPES = list(F16_FIELDS) + list(F32_FIELDS)


def f16_bits(x):
    return np.array(x, dtype=np.float16).view(np.uint16).item()


def put16(blk, off, bits):
    blk[off:off + 2] = np.frombuffer(struct.pack("<H", bits), dtype=np.uint8)


def put32f(blk, off, x):
    blk[off:off + 4] = np.frombuffer(struct.pack("<f", x), dtype=np.uint8)


def set_scales(qt, blk, bits16=None, f32=None):
    """Sets every scale field of blk: bits16 is a list of f16 bit patterns (cycled)."""
    if qt in F16_FIELDS:
        for i, off in enumerate(F16_FIELDS[qt]):
            put16(blk, off, bits16[i % len(bits16)])
    else:
        for off in F32_FIELDS[qt]:
            put32f(blk, off, f32)


def reference(qt, raw):
    if qt == T.Q8_K:
        blocks = raw.reshape((-1, 292))
        d = blocks[:, :4].copy().view(np.float32)
        qs = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return (d * qs).reshape(-1).astype(np.float32)
    return np.asarray(gq.dequantize(raw, qt), dtype=np.float32).reshape(-1)


def random_block_bytes(qt, n, scale_sigma):
    _, size = GGML_QUANT_SIZES[qt]
    blocks = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for b in blocks:
        if qt in F16_FIELDS:
            bits = [f16_bits(rng.standard_normal() * scale_sigma) for _ in F16_FIELDS[qt]]
            set_scales(qt, b, bits16=bits)
        else:
            set_scales(qt, b, f32=np.float32(rng.standard_normal() * scale_sigma))
    return blocks


def special_blocks(qt):
    _, size = GGML_QUANT_SIZES[qt]
    out = []
    if qt in F16_FIELDS:
        # All-ones bytes: max quants, max sub-block scales and mins (Q2_K/Q4_K/Q5_K: 15/63),
        # Q3_K hmask all set, Q6_K scales = -1 (0xFF) ...
        for bits in ([0x7BFF], [0xFBFF], [0x7BFF, 0xFBFF], [0xFBFF, 0x7BFF]):
            b = np.full(size, 0xFF, dtype=np.uint8); set_scales(qt, b, bits16=bits); out.append(b)
        # All-zero quants: minimum quants, Q3_K scale -32 and hmask clear (q = -4), Q6_K q = -32.
        b = np.zeros(size, dtype=np.uint8); set_scales(qt, b, bits16=[0x3C00, 0x4000]); out.append(b)
        # Alternating patterns with large scales.
        b = np.full(size, 0xAA, dtype=np.uint8); set_scales(qt, b, bits16=[0x7800, 0x7BFF]); out.append(b)
        b = np.full(size, 0x55, dtype=np.uint8); set_scales(qt, b, bits16=[0xF800, 0x3555]); out.append(b)
        # Subnormal and signed-zero scales, random quants.
        for bits in ([0x0001, 0x83FF], [0x8000, 0x0000], [0x03FF, 0x8001]):
            b = rng.integers(0, 256, size=size, dtype=np.uint8); set_scales(qt, b, bits16=bits); out.append(b)
    else:
        for d in (3.0e38, -1.0e30, 1.0e-40, -0.0, 1.0):
            b = rng.integers(0, 256, size=size, dtype=np.uint8); set_scales(qt, b, f32=np.float32(d)); out.append(b)
        b = np.full(size, 0x80, dtype=np.uint8); set_scales(qt, b, f32=np.float32(3.4e38)); out.append(b)
    return out


def nonfinite_blocks(qt):
    _, size = GGML_QUANT_SIZES[qt]
    out = []
    if qt in F16_FIELDS:
        patterns = [[0x7C00, 0x3C00], [0xFC00, 0x7C00], [0x7E00, 0x3C00], [0x3C00, 0x7C01], [0xFE01, 0x7D55]]
        if GGML_QUANT_SIZES[qt][0] == 256:
            patterns = [[0x7C00, 0x7E00], [0x3C00, 0x7C01], [0xFE01, 0xFC00]]  # keep the files small
        for bits in patterns:
            b = rng.integers(0, 256, size=size, dtype=np.uint8); set_scales(qt, b, bits16=bits); out.append(b)
        b = np.zeros(size, dtype=np.uint8); set_scales(qt, b, bits16=[0x7C00, 0x7C00]); out.append(b)  # inf * 0
    else:
        for d in (np.inf, -np.inf, np.nan):
            b = rng.integers(0, 256, size=size, dtype=np.uint8); set_scales(qt, b, f32=np.float32(d)); out.append(b)
    return out


def realistic_floats(n):
    x = rng.standard_t(df=4, size=n).astype(np.float32) * np.float32(0.02)
    # a few outliers and exact zeros, as in real weights
    idx = rng.integers(0, n, size=max(1, n // 64))
    x[idx] *= np.float32(40)
    x[rng.integers(0, n, size=max(1, n // 97))] = 0
    return x


def write(path, qt, raw, expected):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    epb, bpb = GGML_QUANT_SIZES[qt]
    assert raw.size % bpb == 0
    n_blocks = raw.size // bpb
    expected = np.ascontiguousarray(expected, dtype=np.float32).reshape(-1)
    assert expected.size == n_blocks * epb, (qt.name, expected.size, n_blocks, epb)
    with open(path, "wb") as f:
        f.write(struct.pack("<II", int(qt), n_blocks))
        f.write(raw.tobytes())
        f.write(expected.astype("<f4").tobytes())


def fnv1a64(data: bytes) -> int:
    # Vectorisation isn't needed: 256 KB.
    h = 0xcbf29ce484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    import argparse
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT, help="output folder (default: tests/data/ggml/ of the repo)")
    ap.add_argument("--extra-random", type=int, default=0, metavar="N",
                    help="append N more random blocks per type (for a one-off wide check outside the repo: "
                         "GGML_VECTORS=DIR cargo test)")
    args = ap.parse_args()
    OUT = args.out
    os.makedirs(os.path.join(OUT, "nonfinite"), exist_ok=True)
    total = 0

    # F32: the reference is a view; random bit patterns (NaNs with payloads, infs, subnormals).
    bits = rng.integers(0, 2**32, size=192 + args.extra_random, dtype=np.uint64).astype(np.uint32)
    bits = np.concatenate([bits, np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0x7FBFFFFF, 0x00000001,
                                           0x80000000, 0x7F800000, 0xFF800000], dtype=np.uint32)])
    real = realistic_floats(56)
    raw = np.concatenate([bits.astype("<u4").view(np.uint8), real.astype("<f4").view(np.uint8)])
    write(os.path.join(OUT, "F32.bin"), T.F32, raw, reference(T.F32, raw))

    # F16 / BF16: random bit patterns, specials, and quantize() of real-looking floats.
    specials16 = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                           0x7C01, 0xFC01, 0x7DFF, 0x7E00, 0xFE00, 0x7FFF, 0xFFFF, 0x3C00], dtype=np.uint16)
    for qt in (T.F16, T.BF16):
        bits = rng.integers(0, 2**16, size=190 + args.extra_random, dtype=np.uint32).astype(np.uint16)
        real = realistic_floats(256)
        if qt == T.F16:
            qreal = gq.quantize(real, T.F16).view(np.uint16)
        else:
            qreal = np.asarray(gq.quantize(real, T.BF16)).view(np.uint16).reshape(-1)
        allbits = np.concatenate([specials16, bits, qreal.reshape(-1)]).astype("<u2")
        raw = allbits.view(np.uint8)
        write(os.path.join(OUT, f"{qt.name}.bin"), qt, raw, reference(qt, raw))

    for qt in BLOCK_TYPES:
        parts = [random_block_bytes(qt, 3, 0.01), random_block_bytes(qt, 1, 10.0)]
        parts.append(np.stack(special_blocks(qt)))
        quantizable = qt in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0)
        epb, _ = GGML_QUANT_SIZES[qt]
        if quantizable:
            x = realistic_floats(epb * 8).reshape(2, epb * 4)
            parts.append(np.asarray(gq.quantize(x, qt)).reshape(-1, GGML_QUANT_SIZES[qt][1]))
        raw = np.concatenate([p.reshape(-1) for p in parts])
        # Small types can afford more random blocks.
        if epb == 32:
            raw = np.concatenate([raw, random_block_bytes(qt, 16, 0.01).reshape(-1)])
        if args.extra_random:
            n = args.extra_random
            raw = np.concatenate([raw, random_block_bytes(qt, n - n // 4, 0.01).reshape(-1),
                                  random_block_bytes(qt, n // 4, 30.0).reshape(-1)])
        write(os.path.join(OUT, f"{qt.name}.bin"), qt, raw, reference(qt, raw))

        nf = np.concatenate([b.reshape(-1) for b in nonfinite_blocks(qt)])
        with np.errstate(invalid="ignore", over="ignore"):
            exp = reference(qt, nf)
        write(os.path.join(OUT, "nonfinite", f"{qt.name}.bin"), qt, nf, exp)

    # Exhaustive F16 / BF16 hashes.
    allp = np.arange(65536, dtype=np.uint32).astype("<u2").view(np.uint8)
    lines = []
    for qt in (T.F16, T.BF16):
        out = reference(qt, allp).astype("<f4").tobytes()
        lines.append(f"{qt.name} {fnv1a64(out):016x}")
    with open(os.path.join(OUT, "exhaustive.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    for root, _, files in os.walk(OUT):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print(f"wrote {OUT}: {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
