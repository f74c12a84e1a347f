//! GPU property tests of paged context FMHA (`kernels::context_attention`) against the f64
//! CPU reference (`cpu::PagedKvStore::context_attention`): random non-contiguous block
//! tables, new-token counts 1, 17, 97, 1000+ and random, start positions 0 and > 0 (a
//! reused prefix or the earlier chunks of a chunked context), every block size, MHA, GQA 4
//! and 8, MQA; NaN in every slot and block no sequence covers, in the query rows between
//! sequences and in the output before the launch.
//!
//! A plain binary (`harness = false`) so that a machine without a GPU prints
//! "skipped: no CUDA device" once and counts nothing as passed. `INFLIGHT_REQUIRE_GPU=1`
//! (set by the GPU bundle's run script) turns a missing GPU into a failure.
//! `INFLIGHT_GPU_CASES` sets the proptest cases per test (default 24). An argument filters
//! tests by substring.

use half::{bf16, f16};
use host_runtime::cpu::{self, ContextSeq};
use host_runtime::dtype::{to_f32_vec, DType};
use host_runtime::kernels::{self, BlockTables, ContextSeqs, DecodeShape, KvPools, PagedKvShape};
use host_runtime::testing::{assert_close, open_test_gpu, poison, GpuAvailability, Rng};
use host_runtime::Gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

type TestResult = Result<(), TestCaseError>;
type TestFn = fn(&Gpu, &mut TestRunner) -> Result<(), String>;

fn fail<E: std::fmt::Display>(e: E) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn run<S: Strategy>(runner: &mut TestRunner, s: S, f: impl Fn(S::Value) -> TestResult) -> Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    runner.run(&s, f).map_err(|e| e.to_string())
}

/// Fisher-Yates shuffle with the test generator.
fn shuffle<X>(rng: &mut Rng, v: &mut [X]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// A paged KV cache: shuffled (non-contiguous) block ids per sequence, some rows with an
/// unused trailing block, spare blocks nobody uses; every slot no sequence covers holds NaN.
struct PagedCase<T> {
    shape: PagedKvShape,
    rows: Vec<Vec<u32>>,
    max_blocks: usize,
    k: Vec<T>,
    v: Vec<T>,
    store: cpu::PagedKvStore,
}

impl<T: DType> PagedCase<T> {
    fn new(rng: &mut Rng, lens: &[usize], kv_heads: usize, head_dim: usize, tpb: usize) -> Self {
        let counts: Vec<usize> = lens.iter().map(|&l| l.div_ceil(tpb) + rng.below(2) as usize).collect();
        let num_blocks = counts.iter().sum::<usize>() + 1 + rng.below(4) as usize;
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
        PagedCase { shape, rows, max_blocks, k, v, store }
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

/// The sequences of one case: new-token counts and start positions drawn from the sizes
/// that matter (one token, odd sizes, more than one query tile, 1000+), packed into `q` in
/// a shuffled order with gaps of 0..3 rows between them.
fn draw_seqs(rng: &mut Rng, batch: usize, budget: usize) -> (Vec<ContextSeq>, usize) {
    let mut seqs = Vec::new();
    for _ in 0..batch {
        let new = match rng.below(5) {
            0 => 1,
            1 => 17,
            2 => 97,
            3 => 1000 + rng.below(100) as usize,
            _ => 1 + rng.below(300) as usize,
        };
        let start = match rng.below(3) {
            0 => 0,
            1 => rng.below(64) as usize,
            _ => rng.below(budget as u64) as usize,
        };
        seqs.push(ContextSeq { q_offset: 0, new_tokens: new, start_pos: start });
    }
    let mut order: Vec<usize> = (0..batch).collect();
    shuffle(rng, &mut order);
    let mut row = rng.below(3) as usize;
    for &b in &order {
        seqs[b].q_offset = row;
        row += seqs[b].new_tokens + rng.below(3) as usize;
    }
    (seqs, row)
}

struct Launch<'a, T> {
    pools: &'a KvPools<T>,
    tables: &'a BlockTables,
    seqs: &'a [ContextSeq],
    total_rows: usize,
    q: &'a [T],
    s: DecodeShape,
}

/// Runs the kernel on NaN-poisoned output and checks every covered row against `want`
/// (`[total_rows][heads][d]`) and that rows of no sequence stay untouched.
fn check<T: DType>(gpu: &Gpu, l: &Launch<T>, want: &[f32]) -> TestResult {
    let d = l.pools.shape().head_dim;
    let heads = l.s.num_heads;
    let col = |f: fn(&ContextSeq) -> usize| l.seqs.iter().map(|x| f(x) as u32).collect::<Vec<u32>>();
    let cs = ContextSeqs::upload(gpu, l.tables, &col(|x| x.q_offset), &col(|x| x.new_tokens), &col(|x| x.start_pos)).map_err(fail)?;
    let q = gpu.upload(l.q).map_err(fail)?;
    let n_out = (l.total_rows.max(1) - 1) * l.s.out_seq_stride + heads * d;
    let mut out = gpu.upload(&poison::<T>(n_out)).map_err(fail)?;
    kernels::context_attention(gpu, l.pools, l.tables, &cs, &q, &mut out, &l.s).map_err(fail)?;
    let got_all = gpu.download(&out).map_err(fail)?;
    let mut covered = vec![false; l.total_rows];
    for x in l.seqs {
        covered[x.q_offset..x.q_offset + x.new_tokens].fill(true);
    }
    let (mut got, mut exp) = (Vec::new(), Vec::new());
    for (row, &c) in covered.iter().enumerate() {
        let g = &got_all[row * l.s.out_seq_stride..][..heads * d];
        if c {
            got.extend_from_slice(g);
            exp.extend_from_slice(&want[row * heads * d..][..heads * d]);
        } else {
            prop_assert!(g.iter().all(|x| x.to_f32().is_nan()), "output row {} belongs to no sequence but was written", row);
        }
    }
    assert_close("context attention", &got, &exp, 2.0 * T::REL_TOL).map_err(fail)
}

/// Query heads per KV head and KV heads: MHA, GQA 4 and 8, MQA (one KV head), odd groups.
fn heads_strategy() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        3 => (Just(1usize), 1usize..4),
        3 => (Just(4usize), 1usize..3),
        3 => (Just(8usize), 1usize..3),
        2 => (prop_oneof![Just(4usize), Just(16)], Just(1usize)),
        1 => (2usize..13, Just(1usize)),
    ]
}

fn test_context_attention<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let shape = (prop_oneof![Just(64usize), Just(128)], prop_oneof![Just(16usize), Just(32), Just(64), Just(128)], heads_strategy(), 1usize..4, any::<u64>());
    run(r, shape, |(d, tpb, (group, kvh), batch, seed)| {
        let mut rng = Rng::new(seed);
        let (seqs, total_rows) = draw_seqs(&mut rng, batch, 700);
        let lens: Vec<usize> = seqs.iter().map(|x| x.start_pos + x.new_tokens).collect();
        let case = PagedCase::<T>::new(&mut rng, &lens, kvh, d, tpb);
        let heads = kvh * group;
        let mut s = DecodeShape::new(heads, d);
        if rng.below(3) == 0 {
            s.q_seq_stride += 8 * (1 + rng.below(4) as usize);
            s.out_seq_stride += 8 * rng.below(3) as usize;
        }
        // Sharp and flat softmaxes; rows between sequences (and stride padding) are NaN.
        let q_range = [0.5f32, 2.0, 6.0][rng.below(3) as usize];
        let mut q_h: Vec<T> = vec![T::from_f32(f32::NAN); (total_rows.max(1) - 1) * s.q_seq_stride + heads * d];
        for x in &seqs {
            for row in x.q_offset..x.q_offset + x.new_tokens {
                for e in &mut q_h[row * s.q_seq_stride..][..heads * d] {
                    *e = T::from_f32(rng.uniform(-q_range, q_range));
                }
            }
        }
        let table = case.flat_table();
        let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        let pb = cpu::PagedBatch { table: &table, max_blocks_per_seq: case.max_blocks, seq_lens: &lens32 };
        let want = case.store.context_attention(&pb, &seqs, &to_f32_vec(&q_h), heads, s.scale, s.q_seq_stride, total_rows);
        let pools = KvPools::upload(gpu, case.shape, &case.k, &case.v).map_err(fail)?;
        let tables = BlockTables::upload(gpu, &case.shape, &case.rows, &lens, case.max_blocks).map_err(fail)?;
        check(gpu, &Launch { pools: &pools, tables: &tables, seqs: &seqs, total_rows, q: &q_h, s }, &want)
    })
}

/// Device-side (unchecked) tables: block ids past the pool or `u32::MAX` must be skipped
/// (never read), exactly as the CPU reference does; a row with nothing readable is zero.
fn test_context_attention_invalid_ids<T: DType>(gpu: &Gpu, r: &mut TestRunner) -> Result<(), String> {
    let shape = (prop_oneof![Just(64usize), Just(128)], prop_oneof![Just(16usize), Just(32), Just(64), Just(128)], heads_strategy(), 1usize..4, any::<u64>());
    run(r, shape, |(d, tpb, (group, kvh), batch, seed)| {
        let mut rng = Rng::new(seed);
        let (seqs, total_rows) = draw_seqs(&mut rng, batch, 300);
        let lens: Vec<usize> = seqs.iter().map(|x| x.start_pos + x.new_tokens).collect();
        let case = PagedCase::<T>::new(&mut rng, &lens, kvh, d, tpb);
        let mut table = case.flat_table();
        let nb = case.shape.num_blocks as u32;
        for (b, row) in case.rows.iter().enumerate() {
            for i in 0..row.len() {
                if rng.below(4) == 0 {
                    table[b * case.max_blocks + i] = if rng.below(2) == 0 { nb + rng.below(1000) as u32 } else { u32::MAX };
                }
            }
        }
        let heads = kvh * group;
        let s = DecodeShape::new(heads, d);
        let q_h: Vec<T> = rng.vec(total_rows.max(1) * heads * d, -2.0, 2.0);
        let lens32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
        let pb = cpu::PagedBatch { table: &table, max_blocks_per_seq: case.max_blocks, seq_lens: &lens32 };
        let want = case.store.context_attention(&pb, &seqs, &to_f32_vec(&q_h), heads, s.scale, s.q_seq_stride, total_rows);
        let pools = KvPools::upload(gpu, case.shape, &case.k, &case.v).map_err(fail)?;
        let tables = BlockTables::from_device(&case.shape, gpu.upload(&table).map_err(fail)?, gpu.upload(&lens32).map_err(fail)?, batch, case.max_blocks, case.max_blocks * tpb).map_err(fail)?;
        check(gpu, &Launch { pools: &pools, tables: &tables, seqs: &seqs, total_rows, q: &q_h, s }, &want)
    })
}

/// Unsupported specialisations and inconsistent arguments are refused before launch, with
/// the argument named.
fn test_context_attention_rejects(gpu: &Gpu, _r: &mut TestRunner) -> Result<(), String> {
    let text = |r: Result<(), host_runtime::DeviceError>| r.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into());
    let expect = |err: String, needle: &str| if err.contains(needle) { Ok(()) } else { Err(format!("expected an error containing {needle:?}, got: {err}")) };
    let es = |e: host_runtime::DeviceError| e.to_string();
    let setup = |d: usize, tpb: usize, kvh: usize| -> Result<(KvPools<bf16>, BlockTables, ContextSeqs), String> {
        let shape = PagedKvShape { num_blocks: 4, num_kv_heads: kvh, tokens_per_block: tpb, head_dim: d };
        let pools = KvPools::<bf16>::alloc(gpu, shape).map_err(es)?;
        let tables = BlockTables::upload(gpu, &shape, &[vec![1u32, 3]], &[tpb + 1], 2).map_err(es)?;
        let seqs = ContextSeqs::upload(gpu, &tables, &[0], &[3], &[tpb as u32 - 2]).map_err(es)?;
        Ok((pools, tables, seqs))
    };
    let q = gpu.upload(&vec![bf16::from_f32(0.5); 16 * 128]).map_err(es)?;
    let mut out = gpu.upload(&vec![bf16::ZERO; 16 * 128]).map_err(es)?;
    let (p, t, c) = setup(96, 16, 1)?;
    expect(text(kernels::context_attention(gpu, &p, &t, &c, &q, &mut out, &DecodeShape::new(1, 96))), "head_dim 96")?;
    let (p, t, c) = setup(128, 8, 1)?;
    expect(text(kernels::context_attention(gpu, &p, &t, &c, &q, &mut out, &DecodeShape::new(1, 128))), "tokens_per_block 8")?;
    let (p, t, c) = setup(64, 16, 3)?;
    expect(text(kernels::context_attention(gpu, &p, &t, &c, &q, &mut out, &DecodeShape::new(4, 64))), "multiple of num_kv_heads")?;
    let (p, t, c) = setup(64, 16, 1)?;
    expect(text(kernels::context_attention(gpu, &p, &t, &c, &q, &mut out, &DecodeShape::new(16, 64))), "q holds")?;
    let mut narrow = DecodeShape::new(1, 64);
    narrow.q_seq_stride = 68;
    expect(text(kernels::context_attention(gpu, &p, &t, &c, &q, &mut out, &narrow)), "q token stride 68")?;
    let (_, t32, c32) = setup(64, 32, 1)?;
    expect(text(kernels::context_attention(gpu, &p, &t32, &c32, &q, &mut out, &DecodeShape::new(1, 64))), "block tables were made")?;
    // Sequence descriptions must match the tables they are used with.
    let shape = PagedKvShape { num_blocks: 4, num_kv_heads: 1, tokens_per_block: 16, head_dim: 64 };
    let two = BlockTables::upload(gpu, &shape, &[vec![0u32], vec![1u32]], &[5, 7], 2).map_err(es)?;
    expect(text(kernels::context_attention(gpu, &p, &two, &c, &q, &mut out, &DecodeShape::new(1, 64))), "seqs were uploaded for 1")?;
    let up = |o: &[u32], n: &[u32], s: &[u32]| ContextSeqs::upload(gpu, &two, o, n, s).err().map(es).unwrap_or_else(|| "accepted".into());
    expect(up(&[0, 5], &[5], &[0, 0]), "new_tokens has 1 entries")?;
    expect(up(&[0, 5], &[5, 3], &[0, 3]), "differs from its block-table length 7")?;
    expect(up(&[0, 3], &[5, 7], &[0, 0]), "overlap")?;
    let dev = BlockTables::from_device(&shape, gpu.upload(&[0u32, 1]).map_err(es)?, gpu.upload(&[5u32]).map_err(es)?, 1, 2, 32).map_err(es)?;
    expect(ContextSeqs::upload(gpu, &dev, &[0], &[30], &[10]).err().map(es).unwrap_or_default(), "exceeds a table row of 32")?;
    // f32 has no kernel.
    let pf = KvPools::<f32>::alloc(gpu, shape).map_err(es)?;
    let tf = BlockTables::upload(gpu, &shape, &[vec![0u32]], &[3], 1).map_err(es)?;
    let cf = ContextSeqs::upload(gpu, &tf, &[0], &[3], &[0]).map_err(es)?;
    let qf = gpu.upload(&[0f32; 3 * 64]).map_err(es)?;
    let mut of = gpu.upload(&[0f32; 3 * 64]).map_err(es)?;
    expect(text(kernels::context_attention(gpu, &pf, &tf, &cf, &qf, &mut of, &DecodeShape::new(1, 64))), "f32")
}

fn all_tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("context_attention_f16", test_context_attention::<f16> as TestFn),
        ("context_attention_bf16", test_context_attention::<bf16> as TestFn),
        ("context_attention_invalid_ids_f16", test_context_attention_invalid_ids::<f16> as TestFn),
        ("context_attention_invalid_ids_bf16", test_context_attention_invalid_ids::<bf16> as TestFn),
        ("context_attention_rejects_bad_arguments", test_context_attention_rejects as TestFn),
    ]
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
    println!("device: {} (sm_{}, {} SMs), PTX sm_{}", info.name, info.compute_capability, info.multiprocessors, info.ptx_arch);
    let cases: u32 = std::env::var("INFLIGHT_GPU_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
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
