//! GPU property tests: every kernel against its CPU reference, with random shapes (odd sizes
//! included), random data, NaN-poisoned outputs and per-dtype tolerances.
//!
//! A plain binary (`harness = false`) so that a machine without a GPU prints
//! "skipped: no CUDA device" once and counts nothing as passed. `INFLIGHT_REQUIRE_GPU=1`
//! (set by the GPU bundle's run script) turns a missing GPU into a failure.
//! `INFLIGHT_GPU_CASES` sets the proptest cases per test (default 48). An argument filters
//! tests by substring.

use half::{bf16, f16};
use host_runtime::cpu;
use host_runtime::dtype::{to_f32_vec, DType};
use host_runtime::kernels::{self, Gelu, Residual, RopeShape, RopeStyle, Rows};
use host_runtime::testing::{assert_bits_eq, assert_close, open_test_gpu, poison, GpuAvailability, Rng};
use host_runtime::Gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

type TestResult = Result<(), TestCaseError>;
type TestFn = fn(&Gpu, &mut TestRunner) -> Result<(), String>;

/// Turns any displayable error into a test-case failure.
fn fail<E: std::fmt::Display>(e: E) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn run<S: Strategy>(runner: &mut TestRunner, s: S, f: impl Fn(S::Value) -> TestResult) -> Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    runner.run(&s, f).map_err(|e| e.to_string())
}

/// Row lengths that exercise the vector path, the scalar path, the register-cached rows and
/// the long rows that re-read.
fn cols_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..64, 64usize..5000, (1usize..600).prop_map(|c| c * 8), 33_000usize..40_000]
}

fn test_copy(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (1usize..200_000, any::<u64>()), |(n16, seed)| {
        let src_h: Vec<u32> = (0..n16 * 4).map(|i| (i as u32).wrapping_mul(seed as u32 | 1)).collect();
        let src = gpu.upload(&src_h).map_err(fail)?;
        let mut dst = gpu.upload(&vec![0xffff_ffffu32; src_h.len()]).map_err(fail)?;
        kernels::copy_bytes(gpu, &src, &mut dst).map_err(fail)?;
        let got = gpu.download(&dst).map_err(fail)?;
        prop_assert_eq!(got, src_h);
        Ok(())
    })
}

fn test_cast<S: DType, D: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (0usize..70_000, any::<u64>()), |(n, seed)| {
        let mut rng = Rng::new(seed);
        let mut src_h: Vec<S> = rng.vec(n, -70_000.0, 70_000.0);
        // Tiny values too (f16 subnormals), and a few specials.
        for (i, v) in src_h.iter_mut().enumerate().filter(|(i, _)| i % 7 == 3) {
            *v = S::from_f32(((i as f32) * 1e-6).copysign(if i % 2 == 0 { 1.0 } else { -1.0 }));
        }
        if n > 3 {
            src_h[0] = S::from_f32(f32::INFINITY);
            src_h[1] = S::from_f32(f32::NEG_INFINITY);
            src_h[2] = S::from_f32(0.0);
        }
        let want: Vec<D> = src_h.iter().map(|v| D::from_f32(v.to_f32())).collect();
        let src = gpu.upload(&src_h).map_err(fail)?;
        let mut dst = gpu.upload(&poison::<D>(n)).map_err(fail)?;
        kernels::cast(gpu, &src, &mut dst).map_err(fail)?;
        assert_bits_eq("cast", &gpu.download(&dst).map_err(fail)?, &want).map_err(fail)
    })
}

fn test_embedding<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (1usize..300, 1usize..700, 1usize..64, any::<u64>()), |(vocab, hidden, tokens, seed)| {
        let mut rng = Rng::new(seed);
        let table_h: Vec<T> = rng.vec(vocab * hidden, -2.0, 2.0);
        // One id past the vocabulary must give a zero row.
        let ids_h: Vec<u32> = (0..tokens).map(|t| if t == tokens / 2 && tokens > 2 { vocab as u32 + 5 } else { rng.below(vocab as u64) as u32 }).collect();
        let want = cpu::embedding(&to_f32_vec(&table_h), hidden, &ids_h);
        let (table, ids) = (gpu.upload(&table_h).map_err(fail)?, gpu.upload(&ids_h).map_err(fail)?);
        let mut out = gpu.upload(&poison::<T>(tokens * hidden)).map_err(fail)?;
        kernels::embedding(gpu, &table, vocab, hidden, &ids, &mut out).map_err(fail)?;
        let want_t: Vec<T> = want.iter().map(|&v| T::from_f32(v)).collect();
        assert_bits_eq("embedding", &gpu.download(&out).map_err(fail)?, &want_t).map_err(fail)
    })
}

#[derive(Clone, Copy, Debug)]
enum ResMode {
    None,
    Add,
    InPlace,
}

fn res_mode() -> impl Strategy<Value = ResMode> {
    prop_oneof![Just(ResMode::None), Just(ResMode::Add), Just(ResMode::InPlace)]
}

fn test_norm<T: DType, const LAYER: bool>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (1usize..12, cols_strategy(), res_mode(), any::<bool>(), any::<u64>()), |(rows, cols, mode, with_bias, seed)| {
        let mut rng = Rng::new(seed);
        let n = rows * cols;
        let offset = if LAYER { rng.uniform(-20.0, 20.0) } else { 0.0 };
        let x_h: Vec<T> = rng.vec(n, offset - 3.0, offset + 3.0);
        let res_h: Vec<T> = rng.vec(n, -1.0, 1.0);
        let w_h: Vec<T> = rng.vec(cols, -2.0, 2.0);
        let b_h: Vec<T> = rng.vec(cols, -1.0, 1.0);
        let eps = 1e-5;
        let res_f = to_f32_vec(&res_h);
        let h = cpu::residual_sum(&to_f32_vec(&x_h), (!matches!(mode, ResMode::None)).then_some(&res_f[..]), T::round);
        let want = if LAYER {
            cpu::layer_norm(&h, &to_f32_vec(&w_h), with_bias.then(|| to_f32_vec(&b_h)).as_deref(), cols, eps)
        } else {
            cpu::rms_norm(&h, &to_f32_vec(&w_h), cols, eps)
        };
        let (x, w, b) = (gpu.upload(&x_h).map_err(fail)?, gpu.upload(&w_h).map_err(fail)?, gpu.upload(&b_h).map_err(fail)?);
        let mut res = gpu.upload(&res_h).map_err(fail)?;
        let mut out = gpu.upload(&poison::<T>(n)).map_err(fail)?;
        let residual = match mode {
            ResMode::None => Residual::None,
            ResMode::Add => Residual::Add(&res),
            ResMode::InPlace => Residual::AddInPlace(&mut res),
        };
        if LAYER {
            kernels::layer_norm(gpu, &x, residual, &w, with_bias.then_some(&b), &mut out, cols, eps).map_err(fail)?;
        } else {
            kernels::rms_norm(gpu, &x, residual, &w, &mut out, cols, eps).map_err(fail)?;
        }
        assert_close("norm output", &gpu.download(&out).map_err(fail)?, &want, 2.0 * T::REL_TOL).map_err(fail)?;
        let res_after = gpu.download(&res).map_err(fail)?;
        match mode {
            ResMode::InPlace => assert_bits_eq("residual written back", &res_after, &h.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>()).map_err(fail),
            _ => assert_bits_eq("residual untouched", &res_after, &res_h).map_err(fail),
        }
    })
}

fn test_rope<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let shape = (1usize..40, 1usize..9, 0usize..5, 1usize..129, 0usize..3, any::<bool>(), any::<u64>());
    run(r, shape, |(tokens, qh, kh, half_head, pad, neox, seed)| {
        let mut rng = Rng::new(seed);
        let head_dim = 2 * half_head;
        let rot_dim = 2 * (1 + rng.below(half_head as u64) as usize);
        let (qs, ks) = (qh * head_dim + pad * 3, kh * head_dim + pad);
        let theta = [10_000.0f32, 500_000.0, 1_000_000.0][rng.below(3) as usize];
        let inv_h = cpu::rope_inv_freq(theta, rot_dim);
        let max_pos = if rng.below(2) == 0 { 64 } else { 131_072 };
        let pos_h: Vec<u32> = (0..tokens).map(|_| rng.below(max_pos) as u32).collect();
        // Padding between tokens is NaN: it must stay untouched.
        let mut q_h: Vec<T> = rng.vec(tokens * qs, -3.0, 3.0);
        let mut k_h: Vec<T> = rng.vec(tokens * ks.max(1), -3.0, 3.0);
        for t in 0..tokens {
            q_h[t * qs + qh * head_dim..(t + 1) * qs].fill(T::from_f32(f32::NAN));
            if kh > 0 {
                k_h[t * ks + kh * head_dim..(t + 1) * ks].fill(T::from_f32(f32::NAN));
            }
        }
        let mut want_q = to_f32_vec(&q_h);
        let mut want_k = to_f32_vec(&k_h);
        cpu::rope(&mut want_q, &pos_h, &inv_h, qh, head_dim, rot_dim, qs, neox);
        if kh > 0 {
            cpu::rope(&mut want_k, &pos_h, &inv_h, kh, head_dim, rot_dim, ks, neox);
        }
        let (pos, inv) = (gpu.upload(&pos_h).map_err(fail)?, gpu.upload(&inv_h).map_err(fail)?);
        let mut q = gpu.upload(&q_h).map_err(fail)?;
        let mut k = gpu.upload(&k_h).map_err(fail)?;
        let s = RopeShape { num_tokens: tokens, num_q_heads: qh, num_k_heads: kh, head_dim, rot_dim, q_token_stride: qs, k_token_stride: ks, style: if neox { RopeStyle::Neox } else { RopeStyle::Gptj } };
        kernels::rope(gpu, &mut q, (kh > 0).then_some(&mut k), &pos, &inv, &s).map_err(fail)?;
        let (got_q, got_k) = (gpu.download(&q).map_err(fail)?, gpu.download(&k).map_err(fail)?);
        // Large positions: the f32 angle is the same on both sides, sin/cos differ by ulps.
        assert_close("rope q", &got_q, &want_q, 2.0 * T::REL_TOL.max(1e-4)).map_err(fail)?;
        assert_close("rope k", &got_k, &want_k, 2.0 * T::REL_TOL.max(1e-4)).map_err(fail)?;
        for (i, (g, w)) in got_q.iter().zip(&q_h).enumerate() {
            prop_assert!(g.to_f32().is_nan() == w.to_f32().is_nan(), "q padding element {} changed", i);
        }
        Ok(())
    })
}

fn test_silu_mul<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (1usize..40, prop_oneof![1usize..300, (1usize..200).prop_map(|c| 8 * c)], any::<bool>(), any::<u64>()), |(rows, cols, fused, seed)| {
        let mut rng = Rng::new(seed);
        let gu_h: Vec<T> = rng.vec(rows * 2 * cols, -8.0, 8.0);
        let gu_f = to_f32_vec(&gu_h);
        let gate_f: Vec<f32> = gu_f.chunks(2 * cols).flat_map(|r| r[..cols].to_vec()).collect();
        let up_f: Vec<f32> = gu_f.chunks(2 * cols).flat_map(|r| r[cols..].to_vec()).collect();
        let want = cpu::silu_mul(&gate_f, &up_f);
        let mut out = gpu.upload(&poison::<T>(rows * cols)).map_err(fail)?;
        if fused {
            let gu = gpu.upload(&gu_h).map_err(fail)?;
            let (g, u) = Rows::halves(&gu, cols);
            kernels::silu_mul(gpu, g, u, &mut out, rows, cols).map_err(fail)?;
        } else {
            let gate = gpu.upload(&gate_f.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>()).map_err(fail)?;
            let up = gpu.upload(&up_f.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>()).map_err(fail)?;
            kernels::silu_mul(gpu, Rows::contiguous(&gate, cols), Rows::contiguous(&up, cols), &mut out, rows, cols).map_err(fail)?;
        }
        assert_close("silu_mul", &gpu.download(&out).map_err(fail)?, &want, 2.0 * T::REL_TOL).map_err(fail)
    })
}

fn test_gelu<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (0usize..100_000, any::<bool>(), any::<bool>(), any::<u64>()), |(n, tanh, in_place, seed)| {
        let mut rng = Rng::new(seed);
        let x_h: Vec<T> = rng.vec(n, -10.0, 10.0);
        let kind = if tanh { Gelu::Tanh } else { Gelu::Erf };
        let want = if tanh { cpu::gelu_tanh(&to_f32_vec(&x_h)) } else { cpu::gelu_erf(&to_f32_vec(&x_h)) };
        let mut x = gpu.upload(&x_h).map_err(fail)?;
        let got = if in_place {
            kernels::gelu_in_place(gpu, kind, &mut x).map_err(fail)?;
            gpu.download(&x).map_err(fail)?
        } else {
            let mut out = gpu.upload(&poison::<T>(n)).map_err(fail)?;
            kernels::gelu(gpu, kind, &x, &mut out).map_err(fail)?;
            gpu.download(&out).map_err(fail)?
        };
        assert_close("gelu", &got, &want, 2.0 * T::REL_TOL.max(1e-5)).map_err(fail)
    })
}

fn test_softmax<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (1usize..10, cols_strategy(), 0.05f32..3.0, any::<u64>()), |(rows, cols, scale, seed)| {
        let mut rng = Rng::new(seed);
        let x_h: Vec<T> = rng.vec(rows * cols, -20.0, 20.0);
        let want = cpu::softmax(&to_f32_vec(&x_h), cols, scale);
        let x = gpu.upload(&x_h).map_err(fail)?;
        let mut out = gpu.upload(&poison::<T>(rows * cols)).map_err(fail)?;
        kernels::softmax(gpu, &x, &mut out, cols, scale).map_err(fail)?;
        assert_close("softmax", &gpu.download(&out).map_err(fail)?, &want, 2.0 * T::REL_TOL.max(1e-5)).map_err(fail)
    })
}

/// Bad arguments are refused before launch, with the kernel and argument named.
fn test_rejects_bad_shapes(gpu: &Gpu, _r: &mut TestRunner) -> Result<(), String> {
    let x = gpu.upload(&[1.0f32; 10]).map_err(|e| e.to_string())?;
    let w = gpu.upload(&[1.0f32; 3]).map_err(|e| e.to_string())?;
    let mut out = gpu.upload(&[0.0f32; 10]).map_err(|e| e.to_string())?;
    let err = kernels::rms_norm(gpu, &x, Residual::None, &w, &mut out, 4, 1e-5).unwrap_err().to_string();
    if !err.contains("rms_norm") || !err.contains("rows of 4") {
        return Err(format!("unexpected error text: {err}"));
    }
    let err = kernels::rms_norm(gpu, &x, Residual::None, &w, &mut out, 5, 1e-5).unwrap_err().to_string();
    if !err.contains("weight") {
        return Err(format!("unexpected error text: {err}"));
    }
    Ok(())
}

macro_rules! dtype_tests {
    ($name:literal, $f:ident) => {
        [
            (concat!($name, "_f32"), $f::<f32> as TestFn),
            (concat!($name, "_f16"), $f::<f16> as TestFn),
            (concat!($name, "_bf16"), $f::<bf16> as TestFn),
        ]
    };
}

fn all_tests() -> Vec<(&'static str, TestFn)> {
    let mut t: Vec<(&'static str, TestFn)> = vec![
        ("copy_bytes", test_copy),
        ("rejects_bad_shapes", test_rejects_bad_shapes),
        ("cast_f32_f16", test_cast::<f32, f16>),
        ("cast_f32_bf16", test_cast::<f32, bf16>),
        ("cast_f16_f32", test_cast::<f16, f32>),
        ("cast_bf16_f32", test_cast::<bf16, f32>),
        ("cast_f16_bf16", test_cast::<f16, bf16>),
        ("cast_bf16_f16", test_cast::<bf16, f16>),
        ("rms_norm_f32", test_norm::<f32, false>),
        ("rms_norm_f16", test_norm::<f16, false>),
        ("rms_norm_bf16", test_norm::<bf16, false>),
        ("layer_norm_f32", test_norm::<f32, true>),
        ("layer_norm_f16", test_norm::<f16, true>),
        ("layer_norm_bf16", test_norm::<bf16, true>),
    ];
    t.extend(dtype_tests!("embedding", test_embedding));
    t.extend(dtype_tests!("rope", test_rope));
    t.extend(dtype_tests!("silu_mul", test_silu_mul));
    t.extend(dtype_tests!("gelu", test_gelu));
    t.extend(dtype_tests!("softmax", test_softmax));
    t
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
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
    println!("device: {} (sm_{}, {} SMs, {:.1} GiB), PTX sm_{}", info.name, info.compute_capability, info.multiprocessors, info.total_memory_bytes as f64 / (1u64 << 30) as f64, info.ptx_arch);
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
