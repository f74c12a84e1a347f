//! `inflight-gemm-bench`: times the tensor-core GEMM and the fused MLP kernels (bf16) at
//! Llama-3-8B shapes, with the copy bandwidth measured in the same run as the ceiling of the
//! decode (`m ≤ 16`) shapes. `host_runtime/benches/torch_gemm.py` times `torch.matmul` at the
//! same shapes and prints the comparison (`--ours` = this program's `--json` file).
//!
//! Per case: random inputs (never zeros), enough weight copies rotated between runs that the
//! weights are read from memory, not the 50 MB L2 (≥ 256 MiB of weights in all); 5 warm-up
//! runs, then the median of `--runs` (default 30) runs timed with device events, each run
//! `--batch` (default 10) launches back to back, reported per launch (a 20 µs kernel timed
//! alone would include the host's launch latency).
//! `--paths` also times every kernel path that takes the shape, not only the chosen one.
//! `--check` compares one output per shape with the f64 CPU reference on a few rows.

use half::bf16;
use host_runtime::device::Timing;
use host_runtime::kernels::{self, GemmEpilogue, GemmOp, GemmPath, Rows};
use host_runtime::testing::Rng;
use host_runtime::{DType, DeviceBuffer, DeviceError, Gpu};
use std::io::Write;

type T = bf16;

struct Case {
    name: String,
    path: String,
    m: usize,
    n: usize,
    k: usize,
    bytes: f64,
    flops: f64,
    timing: Timing,
}

struct Bench<'g> {
    gpu: &'g Gpu,
    rng: Rng,
    runs: usize,
    all_paths: bool,
    /// Launches per timed run (`--batch`, default 10).
    batch: usize,
    cases: Vec<Case>,
}

/// A device buffer of `n` random values in `[lo, hi)` (a random block, repeated).
fn random(gpu: &Gpu, rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Result<DeviceBuffer<T>, DeviceError> {
    let block: Vec<T> = rng.vec(n.min(1 << 22), lo, hi);
    let mut buf = gpu.alloc::<T>(n)?;
    gpu.fill_pattern(&mut buf, &block)?;
    Ok(buf)
}

/// Weight copies so that the rotation reads at least 256 MiB.
fn copies(bytes: usize) -> usize {
    (256usize << 20).div_ceil(bytes.max(1)).clamp(2, 16)
}

impl Bench<'_> {
    #[allow(clippy::too_many_arguments)]
    fn record(&mut self, name: &str, path: &str, (m, n, k): (usize, usize, usize), bytes: f64, flops: f64, mut f: impl FnMut(usize) -> Result<(), DeviceError>) -> Result<(), DeviceError> {
        // `batch` launches back to back per timed run (so that a short kernel is not timed
        // with the host's launch latency in it), reported per launch.
        let batch = self.batch;
        let t = self.gpu.time_runs(5, self.runs, |i| (0..batch).try_for_each(|j| f(i * batch + j)))?;
        let per = |v: f64| v / batch as f64;
        let timing = Timing { median_us: per(t.median_us), min_us: per(t.min_us), max_us: per(t.max_us), runs: t.runs };
        let c = Case { name: name.into(), path: path.into(), m, n, k, bytes, flops, timing };
        eprintln!("  {:<22} {:<8} m{:<5} n{:<6} k{:<6} {:>10.1} us {:>7.1} TFLOP/s {:>7.1} GB/s", c.name, c.path, m, n, k, c.timing.median_us, flops / c.timing.median_us / 1e6, bytes / c.timing.median_us / 1e3);
        self.cases.push(c);
        Ok(())
    }

    fn paths(&self, op: GemmOp, m: usize, n: usize) -> Vec<GemmPath> {
        let info = self.gpu.info();
        let chosen = kernels::choose_path(op, m, n, info.multiprocessors as usize, info.ptx_arch);
        if !self.all_paths {
            return vec![chosen];
        }
        let mut v = vec![chosen];
        v.extend(GemmPath::ALL.into_iter().filter(|p| *p != chosen && p.available(info.ptx_arch) && (*p != GemmPath::Skinny || m <= 16)));
        v
    }
}

fn path_name(p: GemmPath) -> &'static str {
    p.tag()
}

/// `y = x · wᵀ` at one shape, every requested path.
fn gemm_case(b: &mut Bench, m: usize, n: usize, k: usize) -> Result<(), DeviceError> {
    let gpu = b.gpu;
    let e = size_of::<T>();
    let nw = copies(n * k * e);
    let ws = (0..nw).map(|_| random(gpu, &mut b.rng, n * k, -0.05, 0.05)).collect::<Result<Vec<_>, _>>()?;
    let x = random(gpu, &mut b.rng, m * k, -1.0, 1.0)?;
    let mut out = gpu.alloc::<T>(m * n)?;
    let bytes = ((n * k + m * k + m * n) * e) as f64;
    let flops = 2.0 * (m * n * k) as f64;
    for path in b.paths(GemmOp::Gemm, m, n) {
        b.record("gemm", path_name(path), (m, n, k), bytes, flops, |i| kernels::gemm_on_path(gpu, path, &x, &ws[i % nw], &mut out, m, n, k, GemmEpilogue::none()))?;
    }
    Ok(())
}

/// The Llama-3-8B MLP (hidden 4096, intermediate 14336) at `m` tokens: fused gate/up vs
/// gemm + silu_mul, then the down projection with the residual epilogue.
fn mlp_case(b: &mut Bench, m: usize) -> Result<(), DeviceError> {
    let gpu = b.gpu;
    let (h, inter) = (4096usize, 14336usize);
    let e = size_of::<T>();
    let nw = copies(2 * inter * h * e);
    let wgu = (0..nw).map(|_| random(gpu, &mut b.rng, 2 * inter * h, -0.05, 0.05)).collect::<Result<Vec<_>, _>>()?;
    let x = random(gpu, &mut b.rng, m * h, -1.0, 1.0)?;
    let mut act = gpu.alloc::<T>(m * inter)?;
    let mut gu = gpu.alloc::<T>(m * 2 * inter)?;
    let wbytes = (2 * inter * h * e) as f64;
    let flops = 2.0 * (m * 2 * inter * h) as f64;
    let bytes = wbytes + ((m * h + m * inter) * e) as f64;
    for path in b.paths(GemmOp::GateUpSilu, m, inter) {
        b.record("gate_up_silu fused", path_name(path), (m, inter, h), bytes, flops, |i| kernels::gate_up_silu_on_path(gpu, path, &x, &wgu[i % nw], &mut act, m, inter, h))?;
    }
    let split_bytes = wbytes + ((m * h + 2 * m * 2 * inter + m * inter) * e) as f64;
    let path = kernels::choose_path(GemmOp::Gemm, m, 2 * inter, gpu.info().multiprocessors as usize, gpu.info().ptx_arch);
    b.record("gemm + silu_mul", path_name(path), (m, inter, h), split_bytes, flops, |i| {
        kernels::gemm(gpu, &x, &wgu[i % nw], &mut gu, m, 2 * inter, h, GemmEpilogue::none())?;
        let (g, u) = Rows::halves(&gu, inter);
        kernels::silu_mul(gpu, g, u, &mut act, m, inter)
    })?;
    drop(wgu);
    let nd = copies(inter * h * e);
    let wd = (0..nd).map(|_| random(gpu, &mut b.rng, h * inter, -0.05, 0.05)).collect::<Result<Vec<_>, _>>()?;
    let res = random(gpu, &mut b.rng, m * h, -1.0, 1.0)?;
    let mut y = gpu.alloc::<T>(m * h)?;
    let dbytes = ((inter * h + m * inter + 2 * m * h) * e) as f64;
    let path = kernels::choose_path(GemmOp::Gemm, m, h, gpu.info().multiprocessors as usize, gpu.info().ptx_arch);
    b.record("down +residual", path_name(path), (m, h, inter), dbytes, 2.0 * (m * h * inter) as f64, |i| {
        kernels::gemm(gpu, &act, &wd[i % nd], &mut y, m, h, inter, GemmEpilogue { bias: None, residual: Some(&res) })
    })?;
    Ok(())
}

/// Checks a few output rows of each shape against the f64 reference (on the CPU).
fn check_case(gpu: &Gpu, rng: &mut Rng, m: usize, n: usize, k: usize) -> Result<Result<(), String>, DeviceError> {
    let x_h: Vec<T> = rng.vec(m * k, -1.0, 1.0);
    let w_h: Vec<T> = rng.vec(n * k, -0.05, 0.05);
    let (x, w) = (gpu.upload(&x_h)?, gpu.upload(&w_h)?);
    let mut out = gpu.alloc::<T>(m * n)?;
    kernels::gemm(gpu, &x, &w, &mut out, m, n, k, GemmEpilogue::none())?;
    let got = gpu.download(&out)?;
    let rows: Vec<usize> = [0, m / 2, m - 1].into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let xs: Vec<f32> = rows.iter().flat_map(|&r| x_h[r * k..(r + 1) * k].iter().map(|v| v.to_f32())).collect();
    let want = host_runtime::cpu::gemm_f64(&xs, &host_runtime::dtype::to_f32_vec(&w_h), rows.len(), n, k, None, None);
    let got_rows: Vec<T> = rows.iter().flat_map(|&r| got[r * n..(r + 1) * n].to_vec()).collect();
    Ok(host_runtime::testing::assert_close(&format!("gemm m{m} n{n} k{k}"), &got_rows, &want, 2.0 * T::REL_TOL))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(30);
    let ms: Vec<usize> = opt("--m").map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_else(|| vec![1, 16, 256, 4096]);
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("inflight-gemm-bench: {e}");
            std::process::exit(2);
        }
    };
    let info = gpu.info().clone();
    eprintln!("device: {} (sm_{}, {} SMs), PTX sm_{}; median of {runs} runs", info.name, info.compute_capability, info.multiprocessors, info.ptx_arch);
    let mut b = Bench { gpu: &gpu, rng: Rng::new(0x6e44_1c2b), runs, all_paths: args.iter().any(|a| a == "--paths"), batch: opt("--batch").and_then(|v| v.parse().ok()).unwrap_or(10).max(1), cases: Vec::new() };
    let shapes = [(4096usize, 4096usize), (6144, 4096), (28672, 4096), (4096, 14336)];
    let run = |b: &mut Bench| -> Result<Vec<String>, DeviceError> {
        let mut failures = Vec::new();
        let gpu = b.gpu;
        const GIB: usize = 1 << 30;
        let src = random(gpu, &mut b.rng, GIB / 2, -1.0, 1.0)?;
        let mut dst = gpu.alloc::<T>(GIB / 2)?;
        b.record("memcpy_dtod", "-", (0, 0, 0), 2.0 * GIB as f64, 0.0, |_| gpu.copy_device(&src, &mut dst))?;
        drop((src, dst));
        for &m in &ms {
            for &(n, k) in &shapes {
                gemm_case(b, m, n, k)?;
                if args.iter().any(|a| a == "--check") {
                    if let Err(e) = check_case(gpu, &mut b.rng, m, n, k)? {
                        eprintln!("  CHECK FAILED: {e}");
                        failures.push(e);
                    }
                }
            }
        }
        for &m in &ms {
            mlp_case(b, m)?;
        }
        Ok(failures)
    };
    let failures = match run(&mut b) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("inflight-gemm-bench: {e}");
            std::process::exit(1);
        }
    };
    let copy_bw = b.cases[0].bytes / b.cases[0].timing.median_us;
    println!("{:<22} {:<8} {:>5} {:>6} {:>6} {:>10} {:>8} {:>8} {:>7}", "kernel", "path", "m", "n", "k", "median us", "TFLOP/s", "GB/s", "% copy");
    for c in &b.cases {
        let bw = c.bytes / c.timing.median_us;
        println!("{:<22} {:<8} {:>5} {:>6} {:>6} {:>10.1} {:>8.1} {:>8.1} {:>6.1}%", c.name, c.path, c.m, c.n, c.k, c.timing.median_us, c.flops / c.timing.median_us / 1e6, bw / 1e3, 100.0 * bw / copy_bw);
    }
    if let Some(path) = opt("--json") {
        let mut f = std::fs::File::create(&path).expect("creating the --json file");
        for c in &b.cases {
            writeln!(
                f,
                "{{\"device\":{:?},\"kernel\":{:?},\"path\":{:?},\"m\":{},\"n\":{},\"k\":{},\"bytes\":{},\"flops\":{},\"median_us\":{:.3},\"min_us\":{:.3},\"max_us\":{:.3},\"runs\":{},\"pct_of_copy\":{:.1}}}",
                info.name, c.name, c.path, c.m, c.n, c.k, c.bytes, c.flops, c.timing.median_us, c.timing.min_us, c.timing.max_us, c.timing.runs, 100.0 * c.bytes / c.timing.median_us / copy_bw
            )
            .expect("writing the --json file");
        }
    }
    if !failures.is_empty() {
        eprintln!("inflight-gemm-bench: {} result check(s) failed", failures.len());
        std::process::exit(1);
    }
}
