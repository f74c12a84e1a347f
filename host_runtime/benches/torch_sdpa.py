"""Baseline for inflight-fmha-bench: PyTorch scaled_dot_product_attention(is_causal=True)
with the flash backend on the same shapes (bf16, head_dim 128, contiguous [B, H, S, D]).

Random inputs (never zeros), two query sets rotated, 10 warm-ups, the median of 50 runs
timed with CUDA events. TFLOP/s count the causal half: 4 * s^2 * d * heads / 2 per
sequence (for the chunked case, 4 * new * (start + new/2) * d * heads). GQA uses
enable_gqa=True when the flash backend accepts it, else K/V expanded to every head
(outside the timed region; the label says which).
Run: python3 host_runtime/benches/torch_sdpa.py
"""
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [  # (batch, heads, kv_heads, start, new)
    (4, 32, 32, 0, 2048),
    (4, 32, 8, 0, 2048),
    (8, 32, 32, 0, 2048),
    (8, 32, 8, 0, 2048),
    (8, 32, 8, 1024, 1024),
]
D = 128


def time_ms(fn, runs=50, warmup=10):
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(i)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def case(batch, heads, kvh, start, new):
    dev, dt = "cuda", torch.bfloat16
    kv_len = start + new
    qs = [torch.empty(batch, heads, new, D, device=dev, dtype=dt).uniform_(-2, 2) for _ in range(2)]
    k = torch.empty(batch, kvh, kv_len, D, device=dev, dtype=dt).uniform_(-1, 1)
    v = torch.empty(batch, kvh, kv_len, D, device=dev, dtype=dt).uniform_(-1, 1)
    mode = "mha"
    if start == 0:
        kwargs = {"is_causal": True}
    else:
        # Bottom-right causal alignment: query i sits at position start + i.
        from torch.nn.attention.bias import causal_lower_right
        kwargs = {"attn_mask": causal_lower_right(new, kv_len)}
    if kvh != heads:
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                F.scaled_dot_product_attention(qs[0], k, v, enable_gqa=True, **kwargs)
            kwargs["enable_gqa"] = True
            mode = "gqa (enable_gqa)"
        except Exception as e:  # noqa: BLE001
            k = k.repeat_interleave(heads // kvh, dim=1)
            v = v.repeat_interleave(heads // kvh, dim=1)
            mode = f"gqa (kv expanded: {type(e).__name__})"
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ms = time_ms(lambda i: F.scaled_dot_product_attention(qs[i % 2], k, v, **kwargs))
    flops = 4.0 * D * heads * batch * new * (start + new / 2.0)
    label = f"b{batch} start{start} new{new} {heads}/{kvh}h d{D}"
    print(f"{label:<34} {ms * 1e3:>10.1f} us {flops / ms / 1e9:>8.1f} TFLOP/s  {mode}", flush=True)


def main():
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; SDPA flash backend, median of 50 runs")
    for s in SHAPES:
        try:
            case(*s)
        except Exception as e:  # noqa: BLE001
            print(f"{s}: failed: {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    main()
