#!/usr/bin/env python3
"""torch.matmul (cuBLAS) baselines for inflight's GEMM benchmark, and the comparison table.

Times `x @ w.T` in bf16 at the shapes `inflight-gemm-bench` uses (M in {1, 16, 256, 4096} x
(N, K) in {(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336)}), the Llama-3-8B MLP
gate/up as torch does it (one matmul, then silu(gate) * up) and the down projection with
the residual added, plus a 1 GiB device-to-device copy. Same method as the Rust bench:
random inputs, weight copies rotated so that >= 256 MiB of weights are read, 5 warm-up
runs, then the median of --runs runs between CUDA events, each run a CUDA graph of 10
calls (Python's launch overhead would otherwise dominate the small shapes), per call.

With --ours FILE (the JSON lines of `inflight-gemm-bench --json FILE`, same device call)
it prints our time as a percentage of torch's at every shape, and for M <= 16 both as a
percentage of the copy bandwidth.

Usage: python3 torch_gemm.py [--runs 30] [--m 1,16,256,4096] [--json out.jsonl] [--ours ours.jsonl]
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336)]
HIDDEN, INTER = 4096, 14336


BATCH = 10


def timed(fn, runs, warmup=5):
    """Median per-call time in us: BATCH calls (rotating inputs) captured in one CUDA graph,
    replayed `runs` times between events, so Python's launch overhead is not timed."""
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(BATCH):  # warm-up on the capture stream (cuBLAS workspaces)
            fn(i)
        with torch.cuda.graph(graph, stream=stream):
            for i in range(BATCH):
                fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(runs):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / BATCH)
    return statistics.median(times)


def copies(nbytes):
    return max(2, min(16, -(-(256 << 20) // nbytes)))


def rand(*shape, scale=1.0):
    return ((torch.rand(*shape, device="cuda", dtype=torch.float32) * 2 - 1) * scale).to(torch.bfloat16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--m", default="1,16,256,4096")
    ap.add_argument("--json")
    ap.add_argument("--ours")
    args = ap.parse_args()
    ms = [int(v) for v in args.m.split(",")]
    torch.manual_seed(0)
    rows = []

    def rec(kernel, m, n, k, us, nbytes, flops):
        rows.append(dict(kernel=kernel, m=m, n=n, k=k, median_us=us, bytes=nbytes, flops=flops))
        print(f"  torch {kernel:<22} m{m:<5} n{n:<6} k{k:<6} {us:10.1f} us {flops / us / 1e6:7.1f} TFLOP/s {nbytes / us / 1e3:7.1f} GB/s", flush=True)

    src = rand(1 << 29)
    dst = torch.empty_like(src)
    rec("memcpy_dtod", 0, 0, 0, timed(lambda i: dst.copy_(src), args.runs), 2.0 * (1 << 30), 0.0)
    del src, dst
    for m in ms:
        for n, k in SHAPES:
            nw = copies(n * k * 2)
            ws = [rand(n, k, scale=0.05) for _ in range(nw)]
            x = rand(m, k)
            out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            us = timed(lambda i: torch.matmul(x, ws[i % nw].t(), out=out), args.runs)
            rec("gemm", m, n, k, us, 2.0 * (n * k + m * k + m * n), 2.0 * m * n * k)
            del ws
    for m in ms:
        nw = copies(2 * INTER * HIDDEN * 2)
        wgu = [rand(2 * INTER, HIDDEN, scale=0.05) for _ in range(nw)]
        x = rand(m, HIDDEN)

        def gate_up(i):
            gu = torch.matmul(x, wgu[i % nw].t())
            return F.silu(gu[:, :INTER]) * gu[:, INTER:]

        us = timed(gate_up, args.runs)
        rec("gate_up + silu*mul", m, INTER, HIDDEN, us, 2.0 * (2 * INTER * HIDDEN + m * HIDDEN + m * INTER), 4.0 * m * INTER * HIDDEN)
        del wgu
        nd = copies(INTER * HIDDEN * 2)
        wd = [rand(HIDDEN, INTER, scale=0.05) for _ in range(nd)]
        act, res = rand(m, INTER), rand(m, HIDDEN)
        out = torch.empty(m, HIDDEN, device="cuda", dtype=torch.bfloat16)
        us = timed(lambda i: torch.addmm(res, act, wd[i % nd].t(), out=out), args.runs)
        rec("down +residual", m, HIDDEN, INTER, us, 2.0 * (INTER * HIDDEN + m * INTER + 2 * m * HIDDEN), 2.0 * m * HIDDEN * INTER)
        del wd

    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(dict(r, device=torch.cuda.get_device_name())) + "\n")
    if args.ours:
        compare(rows, [json.loads(line) for line in open(args.ours)])


def compare(torch_rows, ours):
    """Our chosen-path time vs torch per shape (ours/torch speed as a percentage)."""
    copy_t = next(r for r in torch_rows if r["kernel"] == "memcpy_dtod")
    copy_o = next(r for r in ours if r["kernel"] == "memcpy_dtod")
    bw_t, bw_o = copy_t["bytes"] / copy_t["median_us"], copy_o["bytes"] / copy_o["median_us"]
    print(f"\ncopy bandwidth: ours {bw_o / 1e3:.0f} GB/s, torch {bw_t / 1e3:.0f} GB/s (read + write)")
    pairs = {"gemm": "gemm", "gate_up_silu fused": "gate_up + silu*mul", "gemm + silu_mul": "gate_up + silu*mul", "down +residual": "down +residual"}
    print(f"{'ours':<20} {'path':<8} {'m':>5} {'n':>6} {'k':>6} {'ours us':>9} {'torch us':>9} {'% torch':>8} {'TFLOP/s':>8} {'% copy':>7}")
    seen = set()
    for o in ours:
        tk = pairs.get(o["kernel"])
        if tk is None:
            continue
        key = (o["kernel"], o["m"], o["n"], o["k"])
        first = key not in seen
        seen.add(key)
        t = next((r for r in torch_rows if r["kernel"] == tk and r["m"] == o["m"] and r["n"] == o["n"] and r["k"] == o["k"]), None)
        if t is None:
            continue
        pct = 100.0 * t["median_us"] / o["median_us"]
        pct_copy = 100.0 * o["bytes"] / o["median_us"] / bw_o
        mark = "" if first else " (alt path)"
        print(f"{o['kernel']:<20} {o['path']:<8} {o['m']:>5} {o['n']:>6} {o['k']:>6} {o['median_us']:>9.1f} {t['median_us']:>9.1f} {pct:>7.1f}% {o['flops'] / o['median_us'] / 1e6:>8.1f} {pct_copy:>6.1f}%{mark}")


if __name__ == "__main__":
    main()
