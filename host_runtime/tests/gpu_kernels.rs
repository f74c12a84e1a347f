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
use host_runtime::kernels::{self, AppendSlots, AttentionWorkspace, BlockTables, DecodeShape, Gelu, KvPools, MultiBlock, PagedKvShape, Residual, RopeShape, RopeStyle, Rows};
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

/// Fisher-Yates shuffle with the test generator.
fn shuffle<X>(rng: &mut Rng, v: &mut [X]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// A paged KV cache for tests: random shuffled (non-contiguous) block ids per sequence, some
/// rows with an unused trailing block, spare blocks nobody uses; every slot no sequence
/// covers (unused slots of used blocks, unused blocks) holds NaN.
struct PagedCase<T> {
    shape: PagedKvShape,
    rows: Vec<Vec<u32>>,
    lens: Vec<usize>,
    max_blocks: usize,
    k: Vec<T>,
    v: Vec<T>,
    store: cpu::PagedKvStore,
}

impl<T: DType> PagedCase<T> {
    fn new(rng: &mut Rng, lens: &[usize], kv_heads: usize, head_dim: usize, tpb: usize) -> Self {
        let counts: Vec<usize> = lens.iter().map(|&l| l.div_ceil(tpb) + rng.below(2) as usize).collect();
        let used: usize = counts.iter().sum();
        let num_blocks = used + 1 + rng.below(4) as usize;
        let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
        shuffle(rng, &mut ids);
        let mut rows = Vec::new();
        let mut at = 0;
        for &c in &counts {
            rows.push(ids[at..at + c].to_vec());
            at += c;
        }
        let max_blocks = counts.iter().copied().max().unwrap_or(0).max(1) + rng.below(3) as usize;
        let mut store = cpu::PagedKvStore::new(num_blocks, kv_heads, tpb, head_dim, f32::NAN);
        for (b, &len) in lens.iter().enumerate() {
            for pos in 0..len {
                for h in 0..kv_heads {
                    let at = store.offset(rows[b][pos / tpb] as usize, h, pos % tpb);
                    for x in 0..head_dim {
                        store.k[at + x] = T::round(rng.uniform(-1.0, 1.0));
                        store.v[at + x] = T::round(rng.uniform(-1.0, 1.0));
                    }
                }
            }
        }
        let k = store.k.iter().map(|&x| T::from_f32(x)).collect();
        let v = store.v.iter().map(|&x| T::from_f32(x)).collect();
        let shape = PagedKvShape { num_blocks, num_kv_heads: kv_heads, tokens_per_block: tpb, head_dim };
        PagedCase { shape, rows, lens: lens.to_vec(), max_blocks, k, v, store }
    }

    /// The block table as the CPU reference reads it (padded like the upload).
    fn flat_table(&self) -> Vec<u32> {
        let mut t = vec![u32::MAX; self.rows.len() * self.max_blocks];
        for (b, r) in self.rows.iter().enumerate() {
            t[b * self.max_blocks..][..r.len()].copy_from_slice(r);
        }
        t
    }
}

/// Query heads per KV head: MHA, the usual GQA ratios, MQA-like 32, and odd sizes.
fn group_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(1usize), 4 => Just(4), 4 => Just(8), 4 => Just(32), 1 => 2usize..65]
}

fn test_kv_append<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let dims = prop_oneof![Just(64usize), Just(128), (1usize..20).prop_map(|x| 8 * x), 1usize..40];
    let tpbs = prop_oneof![Just(16usize), Just(32), Just(64), Just(128), 1usize..20];
    run(r, (1usize..5, 1usize..5, dims, tpbs, 0usize..3, any::<bool>(), any::<u64>()), |(batch, kvh, d, tpb, pad, unchecked, seed)| {
        let mut rng = Rng::new(seed);
        // Old tokens fill part of each row; the new ones go anywhere else in the row's blocks.
        let lens: Vec<usize> = (0..batch).map(|_| rng.below(300) as usize + 1).collect();
        let case = PagedCase::<T>::new(&mut rng, &lens, kvh, d, tpb);
        let mut slots: Vec<(u32, u32)> = Vec::new();
        for (b, row) in case.rows.iter().enumerate() {
            let mut pos: Vec<u32> = (0..(row.len() * tpb) as u32).collect();
            shuffle(&mut rng, &mut pos);
            let n = rng.below(pos.len() as u64 + 1) as usize;
            slots.extend(pos[..n].iter().map(|&p| (b as u32, p)));
        }
        shuffle(&mut rng, &mut slots);
        // Unchecked (device-side) tables: tokens with a bad sequence or a page past the row
        // must be skipped by the kernel.
        if unchecked && !slots.is_empty() {
            slots.push((batch as u32 + 3, 0));
            slots.push((0, (case.max_blocks * tpb + 5) as u32));
        }
        let stride = kvh * d + pad * 8;
        let kn_h: Vec<T> = rng.vec(slots.len().max(1) * stride, -4.0, 4.0);
        let vn_h: Vec<T> = rng.vec(slots.len().max(1) * stride, -4.0, 4.0);
        let (seq_h, pos_h): (Vec<u32>, Vec<u32>) = slots.iter().copied().unzip();
        let table = case.flat_table();
        let mut store = case.store.clone();
        let no_lens = vec![0u32; batch];
        let pb = cpu::PagedBatch { table: &table, max_blocks_per_seq: case.max_blocks, seq_lens: &no_lens };
        store.append(&pb, &seq_h, &pos_h, &to_f32_vec(&kn_h), stride, &to_f32_vec(&vn_h), stride);

        let mut pools = KvPools::upload(gpu, case.shape, &case.k, &case.v).map_err(fail)?;
        let (tables, slots_d) = if unchecked {
            let t = BlockTables::from_device(&case.shape, gpu.upload(&table).map_err(fail)?, gpu.upload(&vec![0u32; batch]).map_err(fail)?, batch, case.max_blocks, 0).map_err(fail)?;
            let n = seq_h.len();
            let pad1 = |v: &[u32]| if v.is_empty() { vec![0] } else { v.to_vec() };
            let s = AppendSlots::from_device(gpu.upload(&pad1(&seq_h)).map_err(fail)?, gpu.upload(&pad1(&pos_h)).map_err(fail)?, n).map_err(fail)?;
            (t, s)
        } else {
            let t = BlockTables::upload(gpu, &case.shape, &case.rows, &vec![0; batch], case.max_blocks).map_err(fail)?;
            let s = AppendSlots::upload(gpu, &t, &seq_h, &pos_h).map_err(fail)?;
            (t, s)
        };
        let (kn, vn) = (gpu.upload(&kn_h).map_err(fail)?, gpu.upload(&vn_h).map_err(fail)?);
        let rows = |b| Rows { buf: b, offset: 0, stride };
        kernels::kv_append(gpu, &mut pools, &tables, &slots_d, rows(&kn), rows(&vn)).map_err(fail)?;
        let want_k: Vec<T> = store.k.iter().map(|&x| T::from_f32(x)).collect();
        let want_v: Vec<T> = store.v.iter().map(|&x| T::from_f32(x)).collect();
        assert_bits_eq("k pool", &gpu.download(pools.k()).map_err(fail)?, &want_k).map_err(fail)?;
        assert_bits_eq("v pool", &gpu.download(pools.v()).map_err(fail)?, &want_v).map_err(fail)
    })
}

/// Runs decode attention with multi-block off, automatic and forced, each against the CPU
/// reference, and checks that split and unsplit results agree.
fn check_decode<T: DType>(gpu: &Gpu, pools: &KvPools<T>, tables: &BlockTables, q_h: &[T], s: &DecodeShape, want: &[f32], forced_splits: usize) -> TestResult {
    let batch = tables.batch();
    let d = pools.shape().head_dim;
    let n_out = if batch == 0 { 0 } else { (batch - 1) * s.out_seq_stride + s.num_heads * d };
    let q = gpu.upload(q_h).map_err(fail)?;
    // Compare the meaningful elements only (out may be strided): gather them.
    let gather = |o: &[T]| -> Vec<T> { (0..batch).flat_map(|b| o[b * s.out_seq_stride..][..s.num_heads * d].to_vec()).collect() };
    let tol = 2.0 * T::REL_TOL;
    let mut ws = AttentionWorkspace::new(gpu, batch, s.num_heads, d, forced_splits.max(64)).map_err(fail)?;
    let mut results = Vec::new();
    for mode in 0..3 {
        let mut out = gpu.upload(&poison::<T>(n_out.max(1))).map_err(fail)?;
        let multi = match mode {
            0 => MultiBlock::Off,
            1 => MultiBlock::Auto(&mut ws),
            _ => MultiBlock::Splits(forced_splits, &mut ws),
        };
        let splits = kernels::decode_attention(gpu, pools, tables, &q, &mut out, s, multi).map_err(fail)?;
        let got = gather(&gpu.download(&out).map_err(fail)?[..n_out.max(1)]);
        let what = format!("decode attention (mode {mode}, {splits} splits)");
        assert_close(&what, &got, want, tol).map_err(fail)?;
        results.push(got);
    }
    let base: Vec<f32> = to_f32_vec(&results[0]);
    for (mode, other) in results.iter().enumerate().skip(1) {
        assert_close(&format!("multi-block mode {mode} vs off"), other, &base, tol).map_err(fail)?;
    }
    Ok(())
}

fn test_decode_attention<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let shape = (prop_oneof![Just(64usize), Just(128)], prop_oneof![Just(16usize), Just(32), Just(64), Just(128)], group_strategy(), 1usize..4, 1usize..5, any::<u64>());
    run(r, shape, |(d, tpb, group, kvh, batch, seed)| {
        let mut rng = Rng::new(seed);
        let kvh = if group > 16 { kvh.min(2) } else { kvh };
        let mut lens: Vec<usize> = Vec::new();
        for _ in 0..batch {
            let l = match rng.below(5) {
                0 => 1,
                1 => 17,
                2 => 97,
                3 => 1000 + rng.below(100) as usize,
                _ => rng.below(600) as usize,
            };
            lens.push(l);
        }
        let case = PagedCase::<T>::new(&mut rng, &lens, kvh, d, tpb);
        let heads = kvh * group;
        let mut s = DecodeShape::new(heads, d);
        // Sometimes strided queries/outputs (a fused QKV row, a padded output).
        if rng.below(3) == 0 {
            s.q_seq_stride += 8 * (1 + rng.below(4) as usize);
            s.out_seq_stride += 8 * rng.below(3) as usize;
        }
        // Sharp and flat softmaxes.
        let q_range = [0.5f32, 2.0, 6.0][rng.below(3) as usize];
        let q_h: Vec<T> = rng.vec((batch - 1) * s.q_seq_stride + heads * d, -q_range, q_range);
        let table = case.flat_table();
        let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        let pb = cpu::PagedBatch { table: &table, max_blocks_per_seq: case.max_blocks, seq_lens: &lens32 };
        let want = case.store.decode_attention(&pb, &to_f32_vec(&q_h), heads, s.scale, s.q_seq_stride);
        let pools = KvPools::upload(gpu, case.shape, &case.k, &case.v).map_err(fail)?;
        let tables = BlockTables::upload(gpu, &case.shape, &case.rows, &case.lens, case.max_blocks).map_err(fail)?;
        let forced = 2 + rng.below(40) as usize;
        check_decode(gpu, &pools, &tables, &q_h, &s, &want, forced)
    })
}

/// Device-side tables are not checked: invalid block ids must be skipped (never read) and
/// lengths past a row clamped, exactly as the CPU reference does.
fn test_decode_attention_invalid_ids<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let shape = (prop_oneof![Just(64usize), Just(128)], prop_oneof![Just(16usize), Just(32), Just(64), Just(128)], group_strategy(), 1usize..4, any::<u64>());
    run(r, shape, |(d, tpb, group, batch, seed)| {
        let mut rng = Rng::new(seed);
        let lens: Vec<usize> = (0..batch).map(|_| 1 + rng.below(700) as usize).collect();
        let case = PagedCase::<T>::new(&mut rng, &lens, 1, d, tpb);
        let mut table = case.flat_table();
        let nb = case.shape.num_blocks as u32;
        // Corrupt some used entries: past the pool, and u32::MAX.
        for b in 0..batch {
            for i in 0..case.rows[b].len() {
                if rng.below(4) == 0 {
                    table[b * case.max_blocks + i] = if rng.below(2) == 0 { nb + rng.below(1000) as u32 } else { u32::MAX };
                }
            }
        }
        // Some lengths past the whole row (clamped to max_blocks × tpb).
        let lens32: Vec<u32> = lens.iter().map(|&l| if rng.below(3) == 0 { (case.max_blocks * tpb + 50) as u32 } else { l as u32 }).collect();
        // Slots the clamp uncovers hold NaN in the pools only where blocks are shared with
        // nobody; make every block of the table fully valid data instead.
        let mut store = case.store.clone();
        for x in store.k.iter_mut().chain(store.v.iter_mut()) {
            if x.is_nan() {
                *x = T::round(rng.uniform(-1.0, 1.0));
            }
        }
        let k_h: Vec<T> = store.k.iter().map(|&x| T::from_f32(x)).collect();
        let v_h: Vec<T> = store.v.iter().map(|&x| T::from_f32(x)).collect();
        let heads = group;
        let s = DecodeShape::new(heads, d);
        let q_h: Vec<T> = rng.vec(batch * heads * d, -2.0, 2.0);
        let pb = cpu::PagedBatch { table: &table, max_blocks_per_seq: case.max_blocks, seq_lens: &lens32 };
        let want = store.decode_attention(&pb, &to_f32_vec(&q_h), heads, s.scale, s.q_seq_stride);
        let pools = KvPools::upload(gpu, case.shape, &k_h, &v_h).map_err(fail)?;
        let tables = BlockTables::from_device(&case.shape, gpu.upload(&table).map_err(fail)?, gpu.upload(&lens32).map_err(fail)?, batch, case.max_blocks, case.max_blocks * tpb).map_err(fail)?;
        check_decode(gpu, &pools, &tables, &q_h, &s, &want, 2 + rng.below(8) as usize)
    })
}

/// Unsupported specialisations and inconsistent arguments are refused before launch.
fn test_decode_attention_rejects(gpu: &Gpu, _r: &mut TestRunner) -> Result<(), String> {
    let e = |r: Result<usize, host_runtime::DeviceError>| r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into());
    let expect = |err: String, needle: &str| if err.contains(needle) { Ok(()) } else { Err(format!("expected an error containing {needle:?}, got: {err}")) };
    let setup = |d: usize, tpb: usize, kvh: usize| -> Result<(KvPools<bf16>, BlockTables), String> {
        let shape = PagedKvShape { num_blocks: 4, num_kv_heads: kvh, tokens_per_block: tpb, head_dim: d };
        let pools = KvPools::<bf16>::alloc(gpu, shape).map_err(|e| e.to_string())?;
        let tables = BlockTables::upload(gpu, &shape, &[vec![1u32, 3]], &[tpb + 1], 2).map_err(|e| e.to_string())?;
        Ok((pools, tables))
    };
    let q = gpu.upload(&vec![bf16::from_f32(0.5); 8 * 128]).map_err(|e| e.to_string())?;
    let mut out = gpu.upload(&vec![bf16::ZERO; 8 * 128]).map_err(|e| e.to_string())?;
    let (p, t) = setup(96, 16, 1)?;
    expect(e(kernels::decode_attention(gpu, &p, &t, &q, &mut out, &DecodeShape::new(1, 96), MultiBlock::Off)), "head_dim 96")?;
    let (p, t) = setup(128, 8, 1)?;
    expect(e(kernels::decode_attention(gpu, &p, &t, &q, &mut out, &DecodeShape::new(1, 128), MultiBlock::Off)), "tokens_per_block 8")?;
    let (p, t) = setup(64, 16, 3)?;
    expect(e(kernels::decode_attention(gpu, &p, &t, &q, &mut out, &DecodeShape::new(4, 64), MultiBlock::Off)), "multiple of num_kv_heads")?;
    let (p, t) = setup(64, 16, 1)?;
    expect(e(kernels::decode_attention(gpu, &p, &t, &q, &mut out, &DecodeShape::new(128, 64), MultiBlock::Off)), "exceed")?;
    expect(e(kernels::decode_attention(gpu, &p, &t, &q, &mut out, &DecodeShape::new(32, 64), MultiBlock::Off)), "q holds")?;
    let mut ws = AttentionWorkspace::new(gpu, 1, 1, 64, 2).map_err(|e| e.to_string())?;
    expect(e(kernels::decode_attention(gpu, &p, &t, &q, &mut out, &DecodeShape::new(1, 64), MultiBlock::Splits(0, &mut ws))), "splits")?;
    expect(e(kernels::decode_attention(gpu, &p, &t, &q, &mut out, &DecodeShape::new(1, 64), MultiBlock::Splits(5, &mut ws))), "workspace")?;
    let (_, t128) = setup(128, 32, 1)?;
    expect(e(kernels::decode_attention(gpu, &p, &t128, &q, &mut out, &DecodeShape::new(1, 64), MultiBlock::Off)), "block tables were made")?;
    // f32 has no decode kernel.
    let shape = PagedKvShape { num_blocks: 2, num_kv_heads: 1, tokens_per_block: 16, head_dim: 64 };
    let pf = KvPools::<f32>::alloc(gpu, shape).map_err(|e| e.to_string())?;
    let tf = BlockTables::upload(gpu, &shape, &[vec![0u32]], &[3], 1).map_err(|e| e.to_string())?;
    let qf = gpu.upload(&[0f32; 64]).map_err(|e| e.to_string())?;
    let mut of = gpu.upload(&[0f32; 64]).map_err(|e| e.to_string())?;
    expect(e(kernels::decode_attention(gpu, &pf, &tf, &qf, &mut of, &DecodeShape::new(1, 64), MultiBlock::Off)), "f32")?;
    // Host-side table checks.
    let bad = BlockTables::upload(gpu, &shape, &[vec![0u32, 7]], &[20], 2).err().map(|e| e.to_string()).unwrap_or_default();
    expect(bad, "block id 7")?;
    let long = BlockTables::upload(gpu, &shape, &[vec![0u32]], &[17], 2).err().map(|e| e.to_string()).unwrap_or_default();
    expect(long, "length 17")?;
    let dup = AppendSlots::upload(gpu, &tf, &[0, 0], &[3, 3]).err().map(|e| e.to_string()).unwrap_or_default();
    expect(dup, "written twice")?;
    let past = AppendSlots::upload(gpu, &tf, &[0], &[16]).err().map(|e| e.to_string()).unwrap_or_default();
    expect(past, "position 16")
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

/// The uniform fill is the host reference rounded once, bit for bit, at any length (odd
/// tails, misaligned sizes), and its values stay inside `center ± half_width`.
fn test_fill_uniform<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    run(r, (0usize..300_000, any::<u64>(), -2.0f32..2.0, 0.0f32..3.0), |(n, seed, center, hw)| {
        let want: Vec<T> = cpu::fill_uniform(n, seed, center, hw).into_iter().map(T::from_f32).collect();
        let mut out = gpu.upload(&poison::<T>(n.max(1))).map_err(fail)?;
        if n == 0 {
            return Ok(());
        }
        kernels::fill_uniform(gpu, &mut out, seed, center, hw).map_err(fail)?;
        let got = gpu.download(&out).map_err(fail)?;
        assert_bits_eq("fill_uniform", &got, &want).map_err(fail)?;
        let bound = T::round(center.abs() + hw) * 1.01 + 1e-6;
        prop_assert!(got.iter().all(|v| v.to_f32().abs() <= bound));
        Ok(())
    })
}

/// `logits_top_k` against `TopLogits::of_row` on the same (rounded) values: identical ids
/// and values (ties → lower id; NaN and `-inf` skipped), the log-sum-exp within 1e-4.
/// Vocabularies from 1 to past 128k, padded row strides, coarse values (many ties), NaN and
/// `-inf` entries, all-masked rows, per-row temperatures.
fn test_top_k<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let vocab = prop_oneof![1usize..100, 100usize..5000, 30_000usize..60_000, Just(128_256usize), Just(151_936)];
    run(r, (1usize..20, vocab, 0usize..9, any::<u64>()), |(rows, vocab, pad, seed)| {
        let mut rng = Rng::new(seed);
        let stride = vocab + pad;
        let coarse = rng.below(2) == 0;
        let mut x: Vec<f32> = (0..rows * stride).map(|_| rng.uniform(-12.0, 12.0)).map(|v| if coarse { (v * 2.0).round() / 2.0 } else { v }).collect();
        for _ in 0..rng.below(40) {
            let i = rng.below(x.len() as u64) as usize;
            x[i] = if rng.below(2) == 0 { f32::NAN } else { f32::NEG_INFINITY };
        }
        if rows > 2 {
            // An all-masked row.
            x[stride..stride + vocab].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
        }
        let x_h: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
        let inv_t: Vec<f32> = (0..rows).map(|_| [1.0, 1.0 / rng.uniform(0.2, 3.0)][rng.below(2) as usize]).collect();
        let buf = gpu.upload(&x_h).map_err(fail)?;
        let mut top = kernels::TopKBuffers::new(gpu, rows + rng.below(3) as usize).map_err(fail)?;
        kernels::logits_top_k(gpu, &buf, vocab, stride, &inv_t, &mut top).map_err(fail)?;
        let got = top.download(gpu, rows).map_err(fail)?;
        for (i, g) in got.iter().enumerate() {
            let row: Vec<f32> = x_h[i * stride..i * stride + vocab].iter().map(|v| v.to_f32()).collect();
            let want = host_runtime::sampling::TopLogits::of_row(&row, kernels::TOP_K_MAX, inv_t[i]);
            prop_assert_eq!(&g.ids, &want.ids, "row {} ids", i);
            prop_assert!(g.logits.iter().zip(&want.logits).all(|(a, b)| a.to_bits() == b.to_bits()), "row {} values", i);
            prop_assert!(g.max == want.max || (g.max.is_nan() && want.max.is_nan()), "row {} max {} vs {}", i, g.max, want.max);
            prop_assert!(g.lse == want.lse || (g.lse - want.lse).abs() <= 1e-4, "row {} lse {} vs {}", i, g.lse, want.lse);
        }
        Ok(())
    })
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
    t.extend(dtype_tests!("fill_uniform", test_fill_uniform));
    t.extend(dtype_tests!("logits_top_k", test_top_k));
    t.extend([
        ("kv_append_f16", test_kv_append::<f16> as TestFn),
        ("kv_append_bf16", test_kv_append::<bf16> as TestFn),
        ("decode_attention_f16", test_decode_attention::<f16> as TestFn),
        ("decode_attention_bf16", test_decode_attention::<bf16> as TestFn),
        ("decode_attention_invalid_ids_f16", test_decode_attention_invalid_ids::<f16> as TestFn),
        ("decode_attention_invalid_ids_bf16", test_decode_attention_invalid_ids::<bf16> as TestFn),
        ("decode_attention_rejects_bad_shapes", test_decode_attention_rejects as TestFn),
    ]);
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
