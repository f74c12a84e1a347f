//! `inflight-kernel-bench`: times every kernel on the GPU against a copy-bandwidth baseline
//! measured in the same run.
//!
//! Per case: inputs filled with random data (never zeros), two input sets rotated between
//! runs, 10 warm-up runs, then the median of `--runs` (default 50) runs timed with device
//! events. Bytes moved count each input read once and each output written once; GB/s is
//! bytes / median time, "% copy" compares with `cuMemcpyDtoD` on 1 GiB (bytes read plus
//! written), the ceiling for memory-bound kernels. `--json FILE` writes one JSON object per
//! case. `--decode-splits 2,8,32` also times decode attention with those split counts. Cases
//! that check their results (decode attention) make the bench exit non-zero when
//! a check fails.

use half::bf16;
use host_runtime::cpu;
use host_runtime::device::Timing;
use host_runtime::dtype::to_f32_vec;
use host_runtime::kernels::{self, AttentionWorkspace, BlockTables, DecodeShape, Gelu, KvPools, MultiBlock, PagedKvShape, Residual, RopeShape, RopeStyle, Rows};
use host_runtime::testing::{assert_close, Rng};
use host_runtime::{DType, DeviceBuffer, DeviceError, Gpu};
use std::io::Write;

struct Case {
    name: String,
    shape: String,
    bytes: f64,
    flops: f64,
    timing: Timing,
}

/// A device buffer of `n` random values in `[lo, hi)` (a 4M-element random block, repeated).
fn random<T: DType>(gpu: &Gpu, rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Result<DeviceBuffer<T>, DeviceError> {
    let block: Vec<T> = rng.vec(n.min(1 << 22), lo, hi);
    let mut buf = gpu.alloc::<T>(n)?;
    gpu.fill_pattern(&mut buf, &block)?;
    Ok(buf)
}

struct Bench<'g> {
    gpu: &'g Gpu,
    rng: Rng,
    runs: usize,
    cases: Vec<Case>,
    filter: Option<String>,
    /// Extra split counts to time for decode attention (`--decode-splits 2,8,32`).
    decode_splits: Vec<usize>,
    /// Result checks that failed (the bench exits non-zero after printing its table).
    failures: Vec<String>,
}

impl Bench<'_> {
    fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }

    fn record(&mut self, name: &str, shape: String, bytes: f64, flops: f64, f: impl FnMut(usize) -> Result<(), DeviceError>) -> Result<(), DeviceError> {
        let timing = self.gpu.time_runs(10, self.runs, f)?;
        let c = Case { name: name.to_owned(), shape, bytes, flops, timing };
        eprintln!("  {:<24} {:<28} {:>9.1} us  {:>7.1} GB/s", c.name, c.shape, c.timing.median_us, c.bytes / c.timing.median_us / 1e3);
        self.cases.push(c);
        Ok(())
    }
}

fn run_all(b: &mut Bench) -> Result<(), DeviceError> {
    let gpu = b.gpu;
    const GIB: usize = 1 << 30;
    // Baselines: the driver's device-to-device copy and our own copy kernel, 1 GiB each way.
    {
        let src = random::<f32>(gpu, &mut b.rng, GIB / 4, -1.0, 1.0)?;
        let mut dst = gpu.alloc::<f32>(GIB / 4)?;
        b.record("memcpy_dtod (baseline)", "1 GiB".into(), 2.0 * GIB as f64, 0.0, |_| gpu.copy_device(&src, &mut dst))?;
        if b.wants("copy_bytes") {
            b.record("copy_bytes", "1 GiB".into(), 2.0 * GIB as f64, 0.0, |_| kernels::copy_bytes(gpu, &src, &mut dst))?;
        }
    }
    type T = bf16;
    let e = size_of::<T>() as f64;
    if b.wants("cast") {
        let n = 64 << 20;
        let src: [DeviceBuffer<f32>; 2] = [random(gpu, &mut b.rng, n, -4.0, 4.0)?, random(gpu, &mut b.rng, n, -4.0, 4.0)?];
        let mut dst = gpu.alloc::<T>(n)?;
        b.record("cast_f32_bf16", format!("{}M", n >> 20), n as f64 * 6.0, 0.0, |i| kernels::cast(gpu, &src[i % 2], &mut dst))?;
        let src: [DeviceBuffer<T>; 2] = [random(gpu, &mut b.rng, n, -4.0, 4.0)?, random(gpu, &mut b.rng, n, -4.0, 4.0)?];
        let mut dst = gpu.alloc::<f32>(n)?;
        b.record("cast_bf16_f32", format!("{}M", n >> 20), n as f64 * 6.0, 0.0, |i| kernels::cast(gpu, &src[i % 2], &mut dst))?;
    }
    if b.wants("norm") {
        let (rows, cols) = (32768usize, 4096usize);
        let n = rows * cols;
        let x: [DeviceBuffer<T>; 2] = [random(gpu, &mut b.rng, n, -2.0, 2.0)?, random(gpu, &mut b.rng, n, -2.0, 2.0)?];
        let w = random::<T>(gpu, &mut b.rng, cols, 0.5, 1.5)?;
        let bias = random::<T>(gpu, &mut b.rng, cols, -0.5, 0.5)?;
        let mut out = gpu.alloc::<T>(n)?;
        let mut res = random::<T>(gpu, &mut b.rng, n, -1.0, 1.0)?;
        let shape = format!("{rows}x{cols}");
        b.record("rms_norm_bf16", shape.clone(), 2.0 * n as f64 * e, 4.0 * n as f64, |i| kernels::rms_norm(gpu, &x[i % 2], Residual::None, &w, &mut out, cols, 1e-5))?;
        b.record("rms_norm_bf16 +residual", shape.clone(), 4.0 * n as f64 * e, 5.0 * n as f64, |i| kernels::rms_norm(gpu, &x[i % 2], Residual::AddInPlace(&mut res), &w, &mut out, cols, 1e-5))?;
        b.record("layer_norm_bf16", shape.clone(), 2.0 * n as f64 * e, 8.0 * n as f64, |i| kernels::layer_norm(gpu, &x[i % 2], Residual::None, &w, Some(&bias), &mut out, cols, 1e-5))?;
    }
    if b.wants("silu") {
        let (rows, cols) = (8192usize, 14336usize);
        let gu: [DeviceBuffer<T>; 2] = [random(gpu, &mut b.rng, rows * 2 * cols, -4.0, 4.0)?, random(gpu, &mut b.rng, rows * 2 * cols, -4.0, 4.0)?];
        let mut out = gpu.alloc::<T>(rows * cols)?;
        b.record("silu_mul_bf16", format!("{rows}x{cols}"), 3.0 * (rows * cols) as f64 * e, 6.0 * (rows * cols) as f64, |i| {
            let (g, u) = Rows::halves(&gu[i % 2], cols);
            kernels::silu_mul(gpu, g, u, &mut out, rows, cols)
        })?;
    }
    if b.wants("gelu") {
        let n = 128 << 20;
        let x: [DeviceBuffer<T>; 2] = [random(gpu, &mut b.rng, n, -6.0, 6.0)?, random(gpu, &mut b.rng, n, -6.0, 6.0)?];
        let mut out = gpu.alloc::<T>(n)?;
        b.record("gelu_tanh_bf16", format!("{}M", n >> 20), 2.0 * n as f64 * e, 10.0 * n as f64, |i| kernels::gelu(gpu, Gelu::Tanh, &x[i % 2], &mut out))?;
        b.record("gelu_erf_bf16", format!("{}M", n >> 20), 2.0 * n as f64 * e, 10.0 * n as f64, |i| kernels::gelu(gpu, Gelu::Erf, &x[i % 2], &mut out))?;
    }
    if b.wants("softmax") {
        for (rows, cols) in [(4096usize, 32000usize), (1024, 128256)] {
            let n = rows * cols;
            let x: [DeviceBuffer<T>; 2] = [random(gpu, &mut b.rng, n, -10.0, 10.0)?, random(gpu, &mut b.rng, n, -10.0, 10.0)?];
            let mut out = gpu.alloc::<T>(n)?;
            b.record("softmax_bf16", format!("{rows}x{cols}"), 2.0 * n as f64 * e, 5.0 * n as f64, |i| kernels::softmax(gpu, &x[i % 2], &mut out, cols, 1.0))?;
        }
    }
    if b.wants("embedding") {
        let (vocab, hidden, tokens) = (128256usize, 4096usize, 32768usize);
        let table = random::<T>(gpu, &mut b.rng, vocab * hidden, -1.0, 1.0)?;
        let ids_h: Vec<u32> = (0..tokens).map(|_| b.rng.below(vocab as u64) as u32).collect();
        let ids = gpu.upload(&ids_h)?;
        let mut out = gpu.alloc::<T>(tokens * hidden)?;
        b.record("embedding_bf16", format!("{tokens} tok x {hidden}"), 2.0 * (tokens * hidden) as f64 * e, 0.0, |_| kernels::embedding(gpu, &table, vocab, hidden, &ids, &mut out))?;
    }
    if b.wants("rope") {
        let (tokens, qh, kh, d) = (32768usize, 32usize, 8usize, 128usize);
        let mut q = random::<T>(gpu, &mut b.rng, tokens * qh * d, -2.0, 2.0)?;
        let mut k = random::<T>(gpu, &mut b.rng, tokens * kh * d, -2.0, 2.0)?;
        let pos = gpu.upload(&(0..tokens as u32).map(|t| t % 8192).collect::<Vec<_>>())?;
        let inv = gpu.upload(&host_runtime::cpu::rope_inv_freq(500_000.0, d))?;
        let s = RopeShape { num_tokens: tokens, num_q_heads: qh, num_k_heads: kh, head_dim: d, rot_dim: d, q_token_stride: qh * d, k_token_stride: kh * d, style: RopeStyle::Neox };
        let bytes = 2.0 * (tokens * (qh + kh) * d) as f64 * e;
        b.record("rope_bf16 (in place)", format!("{tokens} tok {qh}+{kh}h d{d}"), bytes, 0.0, |_| kernels::rope(gpu, &mut q, Some(&mut k), &pos, &inv, &s))?;
    }
    if b.wants("decode_attention") {
        for batch in [64usize, 8, 1] {
            decode_attention_case(b, batch)?;
        }
    }
    Ok(())
}

/// Decode attention over a paged bf16 KV cache: Llama-3-8B-like heads (32 query, 8 KV,
/// head_dim 128), 2048 tokens per sequence in blocks of 32 with shuffled block ids. Small
/// batches rotate through several disjoint sets of sequences (≥ 256 MiB of K/V in all) so
/// that the L2 cache does not serve the reads. Bytes: K and V read once, q read, out
/// written. Multi-block off and automatic; the output of the last set is checked against
/// the CPU reference for a few sequences.
fn decode_attention_case(b: &mut Bench, batch: usize) -> Result<(), DeviceError> {
    type T = bf16;
    let gpu = b.gpu;
    let (heads, kvh, d, tpb, ctx) = (32usize, 8usize, 128usize, 32usize, 2048usize);
    let bps = ctx / tpb;
    let set_bytes = batch * ctx * kvh * d * 2 * size_of::<T>();
    let sets = (256usize << 20).div_ceil(set_bytes).clamp(1, 64);
    let shape = PagedKvShape { num_blocks: sets * batch * bps, num_kv_heads: kvh, tokens_per_block: tpb, head_dim: d };
    let n = shape.pool_elements();
    let (kpat, vpat): (Vec<T>, Vec<T>) = (b.rng.vec(1 << 22, -1.0, 1.0), b.rng.vec(1 << 22, -1.0, 1.0));
    let (mut kbuf, mut vbuf) = (gpu.alloc::<T>(n)?, gpu.alloc::<T>(n)?);
    gpu.fill_pattern(&mut kbuf, &kpat)?;
    gpu.fill_pattern(&mut vbuf, &vpat)?;
    let pools = KvPools::new(shape, kbuf, vbuf)?;
    let mut ids: Vec<u32> = (0..shape.num_blocks as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, b.rng.below(i as u64 + 1) as usize);
    }
    let rows: Vec<Vec<Vec<u32>>> = (0..sets).map(|s| (0..batch).map(|i| ids[(s * batch + i) * bps..][..bps].to_vec()).collect()).collect();
    let tables = rows.iter().map(|r| BlockTables::upload(gpu, &shape, r, &vec![ctx; batch], bps)).collect::<Result<Vec<_>, _>>()?;
    let q_h: Vec<Vec<T>> = (0..sets).map(|_| b.rng.vec(batch * heads * d, -2.0, 2.0)).collect();
    let qs = q_h.iter().map(|q| gpu.upload(q)).collect::<Result<Vec<_>, _>>()?;
    let mut out = gpu.alloc::<T>(batch * heads * d)?;
    let mut ws = AttentionWorkspace::new(gpu, batch, heads, d, 64)?;
    let s = DecodeShape::new(heads, d);
    let bytes = (batch * ctx * kvh * d * 2 + 2 * batch * heads * d) as f64 * size_of::<T>() as f64;
    let flops = 4.0 * (batch * heads * ctx * d) as f64;
    // Multi-block off (0), automatic (None), then any forced split counts.
    let modes: Vec<Option<usize>> = [Some(0), None].into_iter().chain(b.decode_splits.iter().map(|&n| Some(n))).collect();
    for mode in modes {
        // The split count the mode gives (for the label), then the timed runs.
        fn multi(mode: Option<usize>, ws: &mut AttentionWorkspace) -> MultiBlock<'_> {
            match mode {
                None => MultiBlock::Auto(ws),
                Some(0) => MultiBlock::Off,
                Some(n) => MultiBlock::Splits(n.min(64), ws),
            }
        }
        let auto = mode;
        let splits = kernels::decode_attention(gpu, &pools, &tables[0], &qs[0], &mut out, &s, multi(auto, &mut ws))?;
        let name = match mode {
            None => "decode_attention_bf16 mb",
            Some(0) => "decode_attention_bf16",
            Some(_) => "decode_attention_bf16 forced",
        };
        let label = format!("b{batch} ctx{ctx} {heads}/{kvh}h d{d} blk{tpb} x{splits}");
        b.record(name, label, bytes, flops, |i| kernels::decode_attention(gpu, &pools, &tables[i % sets], &qs[i % sets], &mut out, &s, multi(auto, &mut ws)).map(|_| ()))?;
        // Check the last set's output for three sequences against the CPU reference.
        let last = sets - 1;
        kernels::decode_attention(gpu, &pools, &tables[last], &qs[last], &mut out, &s, multi(auto, &mut ws))?;
        let got = gpu.download(&out)?;
        let check: Vec<usize> = [0, batch / 2, batch - 1].into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let block_elems = kvh * tpb * d;
        let mut store = cpu::PagedKvStore::new(check.len() * bps, kvh, tpb, d, f32::NAN);
        let mut q_sel = Vec::new();
        let mut got_sel = Vec::new();
        for (c, &seq) in check.iter().enumerate() {
            for (j, &blk) in rows[last][seq].iter().enumerate() {
                let (src, dst) = (blk as usize * block_elems, (c * bps + j) * block_elems);
                for e in 0..block_elems {
                    store.k[dst + e] = kpat[(src + e) % kpat.len()].to_f32();
                    store.v[dst + e] = vpat[(src + e) % vpat.len()].to_f32();
                }
            }
            q_sel.extend(to_f32_vec(&q_h[last][seq * heads * d..][..heads * d]));
            got_sel.extend_from_slice(&got[seq * heads * d..][..heads * d]);
        }
        let table: Vec<u32> = (0..(check.len() * bps) as u32).collect();
        let lens = vec![ctx as u32; check.len()];
        let want = store.decode_attention(&cpu::PagedBatch { table: &table, max_blocks_per_seq: bps, seq_lens: &lens }, &q_sel, heads, s.scale, heads * d);
        if let Err(e) = assert_close(&format!("{name} b{batch}"), &got_sel, &want, 2.0 * T::REL_TOL) {
            eprintln!("  CHECK FAILED: {e}");
            b.failures.push(e);
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(50);
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("inflight-kernel-bench: {e}");
            std::process::exit(2);
        }
    };
    let info = gpu.info().clone();
    eprintln!("device: {} (sm_{}, {} SMs), PTX sm_{}; median of {runs} runs", info.name, info.compute_capability, info.multiprocessors, info.ptx_arch);
    let mut b = Bench { gpu: &gpu, rng: Rng::new(0x1f1e_33d5), runs, cases: Vec::new(), filter: opt("--filter"), failures: Vec::new(), decode_splits: opt("--decode-splits").map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect()).unwrap_or_default() };
    if let Err(e) = run_all(&mut b) {
        eprintln!("inflight-kernel-bench: {e}");
        std::process::exit(1);
    }
    let base = b.cases[0].bytes / b.cases[0].timing.median_us;
    println!("{:<26} {:<28} {:>10} {:>10} {:>9} {:>8}", "kernel", "shape", "MB moved", "median us", "GB/s", "% copy");
    for c in &b.cases {
        let bw = c.bytes / c.timing.median_us;
        println!("{:<26} {:<28} {:>10.1} {:>10.1} {:>9.1} {:>7.1}%", c.name, c.shape, c.bytes / 1e6, c.timing.median_us, bw / 1e3, 100.0 * bw / base);
    }
    // Decode attention at batch 64 is memory-bound: its target is 70% of the copy bandwidth.
    for c in b.cases.iter().filter(|c| c.name.starts_with("decode_attention") && !c.name.contains("forced") && c.shape.starts_with("b64 ")) {
        let pct = 100.0 * c.bytes / c.timing.median_us / base;
        println!("{} {}: {:.1}% of copy bandwidth (target >= 70%): {}", c.name.trim_end(), c.shape, pct, if pct >= 70.0 { "met" } else { "NOT MET" });
    }
    if let Some(path) = opt("--json") {
        let mut f = std::fs::File::create(&path).expect("creating the --json file");
        for c in &b.cases {
            let bw = c.bytes / c.timing.median_us / 1e3;
            writeln!(
                f,
                "{{\"device\":{:?},\"kernel\":{:?},\"shape\":{:?},\"bytes\":{},\"flops\":{},\"median_us\":{:.3},\"min_us\":{:.3},\"max_us\":{:.3},\"runs\":{},\"gb_per_s\":{:.1},\"pct_of_copy\":{:.1}}}",
                info.name, c.name, c.shape, c.bytes, c.flops, c.timing.median_us, c.timing.min_us, c.timing.max_us, c.timing.runs, bw, 100.0 * c.bytes / c.timing.median_us / base
            )
            .expect("writing the --json file");
        }
    }
    if !b.failures.is_empty() {
        eprintln!("inflight-kernel-bench: {} result check(s) failed:", b.failures.len());
        for f in &b.failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}
