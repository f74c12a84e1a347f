//! GPU property tests of the tensor-core GEMM and the fused gate/up SiLU·mul kernels against
//! the f64 CPU reference (`cpu::gemm_f64`, `cpu::gate_up_silu_f64`): random shapes (`m`
//! including 1, 3, 16, 17, 100, 256; `n`, `k` multiples of 8 that leave partial tiles),
//! bias/residual on and off, bf16 and f16, every kernel path that takes the shape plus the
//! one the wrapper picks (the wgmma path where the sm_90a PTX is loaded), NaN-poisoned
//! outputs with a poisoned tail that must stay untouched.
//!
//! A plain binary (`harness = false`), like `gpu_kernels`: the host-side shape checks run
//! everywhere; without a GPU the GPU tests print "skipped: no CUDA device" and count nothing
//! as passed (`INFLIGHT_REQUIRE_GPU=1` makes that a failure). `INFLIGHT_GPU_CASES` sets the
//! cases per test (default 48); an argument filters tests by substring.

use half::{bf16, f16};
use host_runtime::cpu;
use host_runtime::dtype::{to_f32_vec, DType};
use host_runtime::kernels::{self, check_gemm, GemmEpilogue, GemmLens, GemmOp, GemmPath};
use host_runtime::testing::{assert_close, open_test_gpu, poison, GpuAvailability, Rng};
use host_runtime::{DeviceBuffer, Gpu};
use kernel_abi::StorageType;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

type TestFn = fn(&Gpu, &mut TestRunner) -> Result<(), String>;

fn fail<E: std::fmt::Display>(e: E) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// `m` values the issue names, plus any in 1..300.
fn m_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(16), Just(17), Just(100), Just(256), 1usize..300]
}

/// Multiples of 8 up to `8 × max`, plus a few around the tile sizes.
fn mult8(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![(1..=max).prop_map(|c| 8 * c), Just(8usize), Just(120), Just(136), Just(264)]
}

/// The paths that take `m` (the skinny one only up to 16; wgmma where the loaded PTX has
/// it, at any `m`) and the wrapper's choice.
fn paths(gpu: &Gpu, m: usize) -> Vec<Option<GemmPath>> {
    let mut v = vec![None, Some(GemmPath::Tile64), Some(GemmPath::Tile128)];
    if m <= kernel_abi::gemm::SKINNY_MAX_M {
        v.push(Some(GemmPath::Skinny));
    }
    if GemmPath::Wgmma.available(gpu.info().ptx_arch) {
        v.push(Some(GemmPath::Wgmma));
    }
    v
}

/// Relative L2 error bound per dtype (the outputs are rounded once to the dtype).
fn l2_tol<T: DType>() -> f64 {
    if T::STORAGE == StorageType::Bf16 { 4e-3 } else { 1e-3 }
}

/// Output comparison: per element (`assert_close`), relative L2 error, and the poisoned tail
/// past `len` untouched.
fn check_out<T: DType>(what: &str, got: &[T], want: &[f32]) -> Result<(), TestCaseError> {
    let len = want.len();
    assert_close(what, &got[..len], want, 2.0 * T::REL_TOL).map_err(fail)?;
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got[..len].iter().zip(want) {
        num += (g.to_f32() as f64 - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    let rel = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    prop_assert!(rel <= l2_tol::<T>(), "{}: relative L2 error {:.3e} > {:.1e}", what, rel, l2_tol::<T>());
    prop_assert!(got[len..].iter().all(|v| v.to_f32().is_nan()), "{}: wrote past the output", what);
    Ok(())
}

/// The tail of poisoned elements past every output.
const TAIL: usize = 8;

fn run_gemm_case<T: DType>(gpu: &Gpu, m: usize, n: usize, k: usize, with_bias: bool, with_res: bool, seed: u64) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let x_h: Vec<T> = rng.vec(m * k, -1.0, 1.0);
    let w_h: Vec<T> = rng.vec(n * k, -1.0, 1.0);
    let b_h: Vec<T> = rng.vec(n, -1.0, 1.0);
    let r_h: Vec<T> = rng.vec(m * n, -2.0, 2.0);
    let (bf, rf) = (to_f32_vec(&b_h), to_f32_vec(&r_h));
    let want = cpu::gemm_f64(&to_f32_vec(&x_h), &to_f32_vec(&w_h), m, n, k, with_bias.then_some(&bf[..]), with_res.then_some(&rf[..]));
    let up = |h: &[T]| gpu.upload(h).map_err(fail);
    let (x, w, b, r) = (up(&x_h)?, up(&w_h)?, up(&b_h)?, up(&r_h)?);
    let epi = GemmEpilogue { bias: with_bias.then_some(&b), residual: with_res.then_some(&r) };
    for path in paths(gpu, m) {
        let mut out: DeviceBuffer<T> = up(&poison::<T>(m * n + TAIL))?;
        match path {
            None => kernels::gemm(gpu, &x, &w, &mut out, m, n, k, epi),
            Some(p) => kernels::gemm_on_path(gpu, p, &x, &w, &mut out, m, n, k, epi),
        }
        .map_err(fail)?;
        let what = format!("gemm {path:?} m={m} n={n} k={k} bias={with_bias} residual={with_res}");
        check_out(&what, &gpu.download(&out).map_err(fail)?, &want)?;
    }
    Ok(())
}

fn run_gate_up_case<T: DType>(gpu: &Gpu, m: usize, inter: usize, k: usize, seed: u64) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let x_h: Vec<T> = rng.vec(m * k, -1.0, 1.0);
    let w_h: Vec<T> = rng.vec(2 * inter * k, -1.0, 1.0);
    let want = cpu::gate_up_silu_f64(&to_f32_vec(&x_h), &to_f32_vec(&w_h), m, inter, k);
    let (x, w) = (gpu.upload(&x_h).map_err(fail)?, gpu.upload(&w_h).map_err(fail)?);
    for path in paths(gpu, m) {
        let mut out: DeviceBuffer<T> = gpu.upload(&poison::<T>(m * inter + TAIL)).map_err(fail)?;
        match path {
            None => kernels::gate_up_silu(gpu, &x, &w, &mut out, m, inter, k),
            Some(p) => kernels::gate_up_silu_on_path(gpu, p, &x, &w, &mut out, m, inter, k),
        }
        .map_err(fail)?;
        let what = format!("gate_up_silu {path:?} m={m} inter={inter} k={k}");
        check_out(&what, &gpu.download(&out).map_err(fail)?, &want)?;
    }
    Ok(())
}

fn test_gemm<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let s = (m_strategy(), mult8(80), mult8(100), any::<bool>(), any::<bool>(), any::<u64>());
    r.run(&s, |(m, n, k, bias, res, seed)| run_gemm_case::<T>(gpu, m, n, k, bias, res, seed)).map_err(|e| e.to_string())
}

fn test_gate_up<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let s = (m_strategy(), mult8(48), mult8(100), any::<u64>());
    r.run(&s, |(m, inter, k, seed)| run_gate_up_case::<T>(gpu, m, inter, k, seed)).map_err(|e| e.to_string())
}

/// Model-sized shapes once each: long `k` (many pipeline stages, the skinny path's
/// multi-round loop), and the decode sizes.
fn test_large<T: DType>(gpu: &Gpu, _r: &mut TestRunner) -> Result<(), String> {
    let e = |e: TestCaseError| e.to_string();
    for (m, n, k) in [(1usize, 1024usize, 4096usize), (16, 512, 14336), (300, 384, 2048), (129, 1032, 1000), (257, 1160, 4104)] {
        run_gemm_case::<T>(gpu, m, n, k, true, true, (m * n + k) as u64).map_err(e)?;
    }
    for (m, inter, k) in [(1usize, 1024usize, 4096usize), (16, 264, 4096), (200, 520, 1024)] {
        run_gate_up_case::<T>(gpu, m, inter, k, (m + inter * k) as u64).map_err(e)?;
    }
    Ok(())
}

/// The launch wrappers refuse bad shapes and types before launching.
fn test_rejects(gpu: &Gpu, _r: &mut TestRunner) -> Result<(), String> {
    let msg = |r: Result<(), host_runtime::DeviceError>| r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into());
    let expect = |err: String, needle: &str| if err.contains(needle) { Ok(()) } else { Err(format!("expected an error containing {needle:?}, got: {err}")) };
    let buf = |n: usize| gpu.upload(&vec![bf16::from_f32(0.5); n]).map_err(|e| e.to_string());
    let (x, w) = (buf(16 * 64)?, buf(64 * 64)?);
    let mut out = buf(16 * 64)?;
    expect(msg(kernels::gemm(gpu, &x, &w, &mut out, 16, 60, 16, GemmEpilogue::none())), "n = 60")?;
    expect(msg(kernels::gemm(gpu, &x, &w, &mut out, 16, 64, 65, GemmEpilogue::none())), "k = 65")?;
    expect(msg(kernels::gemm(gpu, &x, &w, &mut out, 17, 64, 64, GemmEpilogue::none())), "x holds")?;
    kernels::gemm_on_path(gpu, GemmPath::Skinny, &x, &w, &mut out, 16, 8, 8, GemmEpilogue::none()).map_err(|e| format!("a valid skinny call was refused: {e}"))?;
    let small = buf(16)?;
    expect(msg(kernels::gemm(gpu, &x, &w, &mut out, 16, 64, 64, GemmEpilogue { bias: Some(&small), residual: None })), "bias holds 16")?;
    expect(msg(kernels::gemm(gpu, &x, &w, &mut out, 16, 64, 64, GemmEpilogue { bias: None, residual: Some(&small) })), "residual holds 16")?;
    expect(msg(kernels::gate_up_silu(gpu, &x, &w, &mut out, 16, 64, 64)), "w_gate_up holds")?;
    let xs = buf(32 * 8)?;
    let mut os = buf(32 * 8)?;
    expect(msg(kernels::gemm_on_path(gpu, GemmPath::Skinny, &xs, &w, &mut os, 32, 8, 8, GemmEpilogue::none())), "skinny path takes m")?;
    if !GemmPath::Wgmma.available(gpu.info().ptx_arch) {
        expect(msg(kernels::gemm_on_path(gpu, GemmPath::Wgmma, &x, &w, &mut out, 16, 64, 64, GemmEpilogue::none())), "needs the sm_90a PTX")?;
    }
    let xf = gpu.upload(&[0f32; 64]).map_err(|e| e.to_string())?;
    let mut of = gpu.upload(&[0f32; 64]).map_err(|e| e.to_string())?;
    expect(msg(kernels::gemm(gpu, &xf, &xf, &mut of, 8, 8, 8, GemmEpilogue::none())), "bf16 and f16 only")
}

/// Host-side shape validation: needs no GPU.
fn host_shape_checks() -> Result<(), String> {
    let t = StorageType::F16;
    let lens = |m: usize, n: usize, k: usize| GemmLens { x: m * k, w: n * k, out: m * n, bias: None, residual: None };
    let msg = |r: Result<(), host_runtime::DeviceError>| r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into());
    let cases: [(Result<(), host_runtime::DeviceError>, &str); 6] = [
        (check_gemm(GemmOp::Gemm, t, 4, 20, 16, &lens(4, 20, 16)), "n = 20"),
        (check_gemm(GemmOp::Gemm, t, 4, 16, 12, &lens(4, 16, 12)), "k = 12"),
        (check_gemm(GemmOp::Gemm, StorageType::F32, 4, 16, 16, &lens(4, 16, 16)), "f32"),
        (check_gemm(GemmOp::Gemm, t, 4, 16, 16, &GemmLens { out: 63, ..lens(4, 16, 16) }), "out holds 63"),
        (check_gemm(GemmOp::GateUpSilu, t, 4, 16, 16, &lens(4, 16, 16)), "w_gate_up holds 256"),
        (check_gemm(GemmOp::Gemm, t, 4, 16, 16, &lens(4, 16, 16)), "accepted"),
    ];
    for (r, needle) in cases {
        let m = msg(r);
        if !m.contains(needle) {
            return Err(format!("expected {needle:?}, got: {m}"));
        }
    }
    Ok(())
}

fn all_tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("gemm_bf16", test_gemm::<bf16>),
        ("gemm_f16", test_gemm::<f16>),
        ("gate_up_silu_bf16", test_gate_up::<bf16>),
        ("gate_up_silu_f16", test_gate_up::<f16>),
        ("gemm_large_bf16", test_large::<bf16>),
        ("gemm_large_f16", test_large::<f16>),
        ("gemm_rejects_bad_shapes", test_rejects),
    ]
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    match host_shape_checks() {
        Ok(()) => println!("test host_shape_checks ... ok"),
        Err(e) => {
            println!("test host_shape_checks ... FAILED\n    {e}");
            std::process::exit(1);
        }
    }
    let tests: Vec<_> = all_tests().into_iter().filter(|(n, _)| filter.as_deref().is_none_or(|f| n.contains(f))).collect();
    let gpu = match open_test_gpu() {
        GpuAvailability::Ready(g) => g,
        GpuAvailability::NoDevice(e) => {
            println!("skipped: no CUDA device ({e})");
            println!("gpu: 0 passed, 0 failed, {} skipped", tests.len());
            if std::env::var_os("INFLIGHT_REQUIRE_GPU").is_some_and(|v| v == "1") {
                eprintln!("INFLIGHT_REQUIRE_GPU=1: a GPU was required");
                std::process::exit(1);
            }
            return;
        }
        GpuAvailability::Broken(e) => {
            println!("gpu: cannot run the GPU tests: {e}");
            println!("gpu: 0 passed, {} failed", tests.len());
            std::process::exit(1);
        }
    };
    let info = gpu.info();
    println!("device: {} (sm_{}, {} SMs), PTX sm_{}", info.name, info.compute_capability, info.multiprocessors, info.ptx_arch);
    let cases: u32 = std::env::var("INFLIGHT_GPU_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        let t0 = std::time::Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&gpu, &mut runner)));
        let outcome = match result {
            Ok(Ok(())) => gpu.synchronize().map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e),
            Err(p) => Err(p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panic".into())),
        };
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({cases} cases, {:.2} s)", t0.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n    {e}");
            }
        }
    }
    println!("gpu: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
