#!/usr/bin/env python3
"""Golden vectors for quant's GGML (de)quantisers, made with gguf-py (the `gguf` package
on PyPI, llama.cpp's own Python library), a reference nobody on this project wrote.

    python3 -m pip install gguf numpy
    python3 quant/testdata/make_golden.py

Writes, next to this script, for each dequantised type T (lower-case name):
  T.blocks  random raw blocks (every f16 scale field set to a finite, moderate f16)
  T.f32     gguf.quants.dequantize(blocks, T), little-endian f32
and for each quantised type Q:
  Q.quant.src.f32  random input rows, little-endian f32
  Q.quant.blocks   gguf.quants.quantize(src, Q) (ggml's reference rounding)

Deterministic: a fixed seed, so rerunning with the same gguf/numpy gives the same bytes.
quant/tests/golden.rs compares the Rust results with these bit for bit.
"""

import importlib.metadata
import pathlib
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

OUT = pathlib.Path(__file__).resolve().parent
SEED = 20240611
rng = np.random.default_rng(SEED)

# Byte offsets of the f16 scale fields inside one block (ggml's block_* structs).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
BLOCKS = {t: (32 if gguf.GGML_QUANT_SIZES[t][0] == 32 else 24) for t in F16_FIELDS}
FLOAT_ELEMENTS = 1024


def moderate_f16(n: int) -> np.ndarray:
    """n finite f16 scales: mostly |v| in [2^-12, 2^3] with random sign, plus a few zeros,
    f16 subnormals and the largest magnitudes a real checkpoint might use."""
    mag = np.exp2(rng.uniform(-12.0, 3.0, n))
    v = (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16)
    special = np.array([0.0, -0.0, 6.0e-8, -3.0e-6, 2.0**-14, 60.0, -100.0], dtype=np.float16)
    k = min(n // 4, len(special))
    idx = rng.choice(n, k, replace=False)
    v[idx] = special[:k]
    assert np.all(np.isfinite(v))
    return v


def random_finite_bits(n: int, dtype, bits_dtype) -> np.ndarray:
    """n random bit patterns of a float type, every one finite (subnormals and -0 kept)."""
    width = np.dtype(bits_dtype).itemsize * 8
    out = np.empty(0, dtype=bits_dtype)
    while out.size < n:
        b = rng.integers(0, 1 << width, 2 * n, dtype=np.uint64).astype(bits_dtype)
        if dtype is None:  # bf16: finite unless the exponent field is all ones
            ok = (b & 0x7F80) != 0x7F80
        else:
            ok = np.isfinite(b.view(dtype))
        out = np.concatenate([out, b[ok]])
    return out[:n]


def write(name: str, arr: np.ndarray) -> int:
    data = np.ascontiguousarray(arr).tobytes()
    (OUT / name).write_bytes(data)
    return len(data)


def main() -> None:
    total = 0
    # Unquantised float types.
    f32_bits = random_finite_bits(FLOAT_ELEMENTS, np.float32, np.uint32).astype("<u4")
    f16_bits = random_finite_bits(FLOAT_ELEMENTS, np.float16, np.uint16).astype("<u2")
    bf16_bits = random_finite_bits(FLOAT_ELEMENTS, None, np.uint16).astype("<u2")
    for t, bits in [(T.F32, f32_bits), (T.F16, f16_bits), (T.BF16, bf16_bits)]:
        raw = bits.view(np.uint8)
        deq = dequantize(raw, t).astype("<f4")
        assert deq.shape == (FLOAT_ELEMENTS,), deq.shape
        total += write(f"{t.name.lower()}.blocks", raw)
        total += write(f"{t.name.lower()}.f32", deq)

    # Block formats: random bytes, then valid finite scales in the f16 fields.
    for t, fields in F16_FIELDS.items():
        block_size, type_size = gguf.GGML_QUANT_SIZES[t]
        n = BLOCKS[t]
        blocks = rng.integers(0, 256, (n, type_size), dtype=np.uint8)
        for off in fields:
            blocks[:, off : off + 2] = moderate_f16(n).astype("<f2").view(np.uint8).reshape(n, 2)
        deq = dequantize(blocks.reshape(-1), t).astype("<f4").reshape(-1)
        assert deq.size == n * block_size and np.all(np.isfinite(deq)), t
        total += write(f"{t.name.lower()}.blocks", blocks)
        total += write(f"{t.name.lower()}.f32", deq)

    # Quantisers: rows of varied scale and shape, incl. an all-zero block, a constant
    # block and blocks whose largest magnitude is negative.
    for t in [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]:
        n = 32
        scale = np.exp2(rng.uniform(-8.0, 6.0, (n, 1)))
        src = (rng.standard_normal((n, 32)) * scale).astype(np.float32)
        src[1] = 0.0
        src[2] = np.float32(0.75)
        src[3, 7] = -np.abs(src[3]).max() * 2
        src[4] = rng.uniform(-1.0, 3.0, 32).astype(np.float32)
        q = quantize(src, t)
        assert q.shape == (n, gguf.GGML_QUANT_SIZES[t][1]), q.shape
        total += write(f"{t.name.lower()}.quant.src.f32", src.astype("<f4"))
        total += write(f"{t.name.lower()}.quant.blocks", q)

    print(f"gguf {importlib.metadata.version('gguf')}, numpy {np.__version__}: wrote {total} bytes to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
