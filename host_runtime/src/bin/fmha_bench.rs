//! `inflight-fmha-bench`: times paged context FMHA (`kernels::context_attention`) on
//! prefill shapes and reports TFLOP/s, to compare with
//! `host_runtime/benches/torch_sdpa.py` (PyTorch SDPA, flash backend) on the same shapes.
//!
//! Per case: bf16, head_dim 128, `batch` sequences of `new` new tokens after `start` cached
//! ones, blocks of 64 tokens with shuffled ids, random data (never zeros), two query sets
//! rotated between runs, 10 warm-ups, then the median of `--runs` (default 50) runs timed
//! with device events. FLOPs count only the causal half: `4 · new · (start + new/2) · d ·
//! heads` per sequence (`4 · s² · d · heads / 2` for a whole prefill of `s`). A few rows of
//! one sequence are checked against the f64 CPU reference; a failed check makes the bench
//! exit non-zero. `--json FILE` writes one JSON object per case; `--filter S` keeps cases
//! whose label contains `S`.

use half::bf16;
use host_runtime::cpu::{self, ContextSeq};
use host_runtime::dtype::to_f32_vec;
use host_runtime::kernels::{self, BlockTables, ContextSeqs, DecodeShape, KvPools, PagedKvShape};
use host_runtime::testing::{assert_close, Rng};
use host_runtime::{DType, DeviceError, Gpu};
use std::io::Write;

type T = bf16;

/// One benchmark shape.
struct Shape {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    start: usize,
    new: usize,
}

impl Shape {
    fn label(&self) -> String {
        format!("b{} start{} new{} {}/{}h d128 blk64", self.batch, self.start, self.new, self.heads, self.kv_heads)
    }
    /// Causal FLOPs: each new token attends `start + i + 1` keys, 4·d FLOPs per (query, key, head).
    fn flops(&self) -> f64 {
        let (s, n) = (self.start as f64, self.new as f64);
        4.0 * 128.0 * self.heads as f64 * self.batch as f64 * n * (s + n / 2.0)
    }
}

struct Result1 {
    label: String,
    median_us: f64,
    tflops: f64,
}

const D: usize = 128;
const TPB: usize = 64;

fn run_case(gpu: &Gpu, rng: &mut Rng, sh: &Shape, runs: usize, failures: &mut Vec<String>) -> Result<Result1, DeviceError> {
    let len = sh.start + sh.new;
    let bps = len.div_ceil(TPB);
    let shape = PagedKvShape { num_blocks: sh.batch * bps, num_kv_heads: sh.kv_heads, tokens_per_block: TPB, head_dim: D };
    let n = shape.pool_elements();
    let (kpat, vpat): (Vec<T>, Vec<T>) = (rng.vec(1 << 22, -1.0, 1.0), rng.vec(1 << 22, -1.0, 1.0));
    let (mut kbuf, mut vbuf) = (gpu.alloc::<T>(n)?, gpu.alloc::<T>(n)?);
    gpu.fill_pattern(&mut kbuf, &kpat)?;
    gpu.fill_pattern(&mut vbuf, &vpat)?;
    let pools = KvPools::new(shape, kbuf, vbuf)?;
    let mut ids: Vec<u32> = (0..shape.num_blocks as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let rows: Vec<Vec<u32>> = (0..sh.batch).map(|b| ids[b * bps..][..bps].to_vec()).collect();
    let tables = BlockTables::upload(gpu, &shape, &rows, &vec![len; sh.batch], bps)?;
    let offs: Vec<u32> = (0..sh.batch).map(|b| (b * sh.new) as u32).collect();
    let seqs = ContextSeqs::upload(gpu, &tables, &offs, &vec![sh.new as u32; sh.batch], &vec![sh.start as u32; sh.batch])?;
    let tokens = sh.batch * sh.new;
    let q_h: Vec<Vec<T>> = (0..2).map(|_| rng.vec(tokens * sh.heads * D, -2.0, 2.0)).collect();
    let qs = [gpu.upload(&q_h[0])?, gpu.upload(&q_h[1])?];
    let mut out = gpu.alloc::<T>(tokens * sh.heads * D)?;
    let s = DecodeShape::new(sh.heads, D);
    let timing = gpu.time_runs(10, runs, |i| kernels::context_attention(gpu, &pools, &tables, &seqs, &qs[i % 2], &mut out, &s))?;

    // Check rows of the last sequence (query set 0) against the CPU reference.
    kernels::context_attention(gpu, &pools, &tables, &seqs, &qs[0], &mut out, &s)?;
    let got = gpu.download(&out)?;
    let b = sh.batch - 1;
    let block_elems = sh.kv_heads * TPB * D;
    let mut store = cpu::PagedKvStore::new(bps, sh.kv_heads, TPB, D, f32::NAN);
    for (j, &blk) in rows[b].iter().enumerate() {
        let (src, dst) = (blk as usize * block_elems, j * block_elems);
        for e in 0..block_elems {
            store.k[dst + e] = kpat[(src + e) % kpat.len()].to_f32();
            store.v[dst + e] = vpat[(src + e) % vpat.len()].to_f32();
        }
    }
    let check_rows: Vec<usize> = [0, sh.new / 2, sh.new - 1].into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let row = sh.heads * D;
    let mut q_sel = Vec::new();
    let mut got_sel = Vec::new();
    let mut ref_seqs = Vec::new();
    for (k, &i) in check_rows.iter().enumerate() {
        let r = b * sh.new + i;
        q_sel.extend(to_f32_vec(&q_h[0][r * row..][..row]));
        got_sel.extend_from_slice(&got[r * row..][..row]);
        // One query token at position start + i, as a sequence of one new token.
        ref_seqs.push(ContextSeq { q_offset: k, new_tokens: 1, start_pos: sh.start + i });
    }
    let table: Vec<u32> = (0..bps as u32).collect::<Vec<_>>().repeat(check_rows.len());
    let lens = vec![len as u32; check_rows.len()];
    let pb = cpu::PagedBatch { table: &table, max_blocks_per_seq: bps, seq_lens: &lens };
    let want = store.context_attention(&pb, &ref_seqs, &q_sel, sh.heads, s.scale, row, check_rows.len());
    if let Err(e) = assert_close(&format!("context_attention {}", sh.label()), &got_sel, &want, 2.0 * T::REL_TOL) {
        eprintln!("  CHECK FAILED: {e}");
        failures.push(e);
    }
    let tflops = sh.flops() / timing.median_us / 1e6;
    eprintln!("  {:<40} {:>9.1} us  {:>7.1} TFLOP/s", sh.label(), timing.median_us, tflops);
    Ok(Result1 { label: sh.label(), median_us: timing.median_us, tflops })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(50);
    let filter = opt("--filter");
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("inflight-fmha-bench: {e}");
            std::process::exit(2);
        }
    };
    let info = gpu.info().clone();
    eprintln!("device: {} (sm_{}, {} SMs), PTX sm_{}; median of {runs} runs", info.name, info.compute_capability, info.multiprocessors, info.ptx_arch);
    let shapes = [
        Shape { batch: 4, heads: 32, kv_heads: 32, start: 0, new: 2048 },
        Shape { batch: 4, heads: 32, kv_heads: 8, start: 0, new: 2048 },
        Shape { batch: 8, heads: 32, kv_heads: 32, start: 0, new: 2048 },
        Shape { batch: 8, heads: 32, kv_heads: 8, start: 0, new: 2048 },
        // A chunked context / reused prefix: the second half of a 2048-token prompt.
        Shape { batch: 8, heads: 32, kv_heads: 8, start: 1024, new: 1024 },
    ];
    let mut rng = Rng::new(0x5eed_f3a1);
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for sh in shapes.iter().filter(|s| filter.as_deref().is_none_or(|f| s.label().contains(f))) {
        match run_case(&gpu, &mut rng, sh, runs, &mut failures) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("inflight-fmha-bench: {}: {e}", sh.label());
                std::process::exit(1);
            }
        }
    }
    println!("{:<40} {:>10} {:>9}", "context_attention_bf16 shape", "median us", "TFLOP/s");
    for r in &results {
        println!("{:<40} {:>10.1} {:>9.1}", r.label, r.median_us, r.tflops);
    }
    if let Some(path) = opt("--json") {
        let mut f = std::fs::File::create(&path).expect("creating the --json file");
        for r in &results {
            writeln!(f, "{{\"device\":{:?},\"kernel\":\"context_attention_bf16\",\"shape\":{:?},\"median_us\":{:.3},\"tflops\":{:.2}}}", info.name, r.label, r.median_us, r.tflops).expect("writing the --json file");
        }
    }
    if !failures.is_empty() {
        eprintln!("inflight-fmha-bench: {} result check(s) failed", failures.len());
        std::process::exit(1);
    }
}
