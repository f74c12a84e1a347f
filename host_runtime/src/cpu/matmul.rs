//! CPU matrix multiply for the reference backend: `y = x · wᵀ` with `x` `[m, k]` row-major
//! and `w` `[n, k]` row-major (the layout of every linear layer's weight), f32 with f32
//! accumulation, parallel over blocks of output columns with rayon.
//!
//! # The canonical order (batch invariance)
//!
//! Every output `y[i, j]` is computed with one fixed sequence of floating-point operations,
//! whatever `m`, the row's place in `x`, the column's place in its block and the kernel
//! path, so a sequence's logits are bit-identical alone, in a batch, or recomputed as a
//! context chunk. With AVX2+FMA (see [`matmul_dot`]):
//!
//! 1. one 8-lane accumulator, starting at zero: `acc = fma(x[8c..8c+8], w[8c..8c+8], acc)`
//!    for `c = 0, 1, …, k/8 - 1` in order;
//! 2. the fixed horizontal sum `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`;
//! 3. the `k % 8` tail elements in order, `s = s + x[t]·w[t]` (a product, then a sum: not
//!    fused);
//! 4. `y = s + bias[j]` (`+ 0.0` without a bias).
//!
//! The register-tiled kernel (up to 4 rows of `x` × 3 weight rows, or 1 × 8, with one
//! accumulator per output kept in registers) and the single-output [`matmul_dot`] run that
//! same sequence per output. For several rows of `x` the tiles go through blocks of 8 rows
//! and, for long rows (`k` > 576), passes over equal slices of `k` that keep the block and
//! one weight tile in L1; between passes each output's 8-lane accumulator is stored and
//! reloaded whole, which leaves step 1's order (and every bit) unchanged. With AVX-512F,
//! several rows of `x` use the tiles of `super::tile512` instead (two rows in the halves of
//! one 512-bit accumulator: per output the same operations, so the same bits). Without AVX2+FMA every output is one portable 8-lane dot
//! (products and sums unfused): different bits from the AVX2 path, but the same for every
//! `m` on that machine.
//!
//! Quantised [`WeightRows`] with a fused dot are the one exception: up to
//! `FUSED_MAX_ROWS` activation rows use the fused kernels of [`super::qdot`], which round
//! differently from decoding the row to f32 (as above rows use): accepted for native
//! (block-format) weights, never for f32 ones.

use rayon::prelude::*;

/// Output columns per rayon task of the fused (few-row) path: big enough to amortise
/// scheduling, small enough to balance two to a few dozen cores.
const COLS_PER_TASK: usize = 64;

/// Rows of `x` × weight rows of the register tile (12 accumulators + 3 weight vectors + 1
/// activation vector = the 16 AVX2 registers); a single activation row uses `1 × NR1`.
const MR: usize = 4;
const NR: usize = 3;
const NR1: usize = 8;

/// Activation rows per block of the tiled path (two `MR` groups): each `NR`-row slice of
/// the weight panel is read from L2 once per block and reused from L1 by its groups.
const MB: usize = 2 * MR;

/// At most this many elements of `k` per pass: a block's `MB` activation rows and one
/// weight tile stay in L1 (32 KB) for the pass. Longer rows run in equal passes (multiples
/// of 8); between passes each output's 8-lane accumulator is stored and reloaded whole, so
/// the operation order (and every bit) is the same as one pass over `k`.
const KC: usize = 576;

/// Decoded weight panel per task: at most about this many bytes (it stays in L2 while every
/// activation row passes over it).
const PANEL_BYTES: usize = 192 * 1024;

/// Dot product of two equal-length slices: AVX2+FMA when the CPU has them (checked once),
/// else 8 portable lanes. Four accumulators (short vectors, such as attention's, are
/// latency-bound): this is *not* the order of [`matmul_nt`]; see [`matmul_dot`] for that.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// The canonical horizontal sum of an 8-lane accumulator (step 2 of the module's order).
#[cfg(target_arch = "x86_64")]
pub(super) use avx2::hsum as hsum_canonical;

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"))
}

/// AVX2 + FMA dot product: four 8-wide accumulators.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats at an index + 8 <= n of both slices.
    unsafe {
        while i + 32 <= n {
            for (k, acc_k) in acc.iter_mut().enumerate() {
                *acc_k = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * k)), _mm256_loadu_ps(pb.add(i + 8 * k)), *acc_k);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut total = avx2::hsum(s);
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }
}

/// Dot product, 8 portable lanes (vectorised by the compiler for the baseline target).
#[inline]
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    tail
}

/// `a · b` in the canonical order of [`matmul_nt`] (see the module documentation): the
/// value `matmul_nt` gives for one output, before the bias.
pub fn matmul_dot(a: &[f32], b: &[f32]) -> f32 {
    let k = a.len();
    assert_eq!(b.len(), k, "matmul_dot: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA checked at run time; one row of `k` floats behind each pointer.
        return unsafe { avx2::tile::<1, 1>(a.as_ptr(), k, b.as_ptr(), k, k) }[0][0];
    }
    dot_portable(a, b)
}

/// The rows of a weight matrix `[n, k]`, however they are stored: the hook for weight
/// formats other than f32 (a quantised matrix decodes row `j` into `scratch`).
pub trait WeightRows: Sync {
    /// Row `j` as `k` f32 values.
    fn row<'a>(&'a self, j: usize, scratch: &'a mut [f32]) -> &'a [f32];

    /// Rows `j0..j1` as one row-major `[j1 - j0, k]` f32 panel: borrowed when stored as
    /// f32, else decoded into `scratch` (resized as needed). `k > 0`. The default decodes
    /// row by row through [`WeightRows::row`].
    fn panel<'a>(&'a self, j0: usize, j1: usize, k: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        scratch.resize((j1 - j0) * k, 0.0);
        let mut tmp = vec![0f32; k];
        for (jj, dst) in scratch.chunks_exact_mut(k).enumerate() {
            dst.copy_from_slice(self.row(j0 + jj, &mut tmp));
        }
        scratch
    }

    /// True when [`WeightRows::fused_dot`] has a kernel for this format.
    fn has_fused_dot(&self) -> bool {
        false
    }

    /// `x · row j` without materialising the row (`block_sums`: Σx per 32-element block),
    /// for formats with a kernel (see [`super::qdot`]).
    fn fused_dot(&self, _j: usize, _x: &[f32], _block_sums: &[f32]) -> f32 {
        unreachable!("fused_dot without has_fused_dot")
    }

    /// `out[i] = x[i] · row j` for the `m = out.len()` (at most 4) rows of `x` (`[m, k]`;
    /// `block_sums` `[m, k / 32]`), each the same as [`WeightRows::fused_dot`] of that row
    /// alone. The default calls it per row; a format's kernel may decode the row once.
    fn fused_dots(&self, j: usize, x: &[f32], block_sums: &[f32], out: &mut [f32]) {
        let m = out.len();
        let (k, nb) = (x.len() / m, block_sums.len() / m);
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.fused_dot(j, &x[i * k..(i + 1) * k], &block_sums[i * nb..(i + 1) * nb]);
        }
    }
}

/// Up to this many activation rows, a format with a fused dot decodes each weight row once
/// per activation row in registers; above it, decoding the row once into f32 is cheaper.
const FUSED_MAX_ROWS: usize = super::qdot::MAX_ROWS;

/// A row-major f32 matrix.
struct F32Rows<'w> {
    w: &'w [f32],
    k: usize,
}

impl WeightRows for F32Rows<'_> {
    fn row<'a>(&'a self, j: usize, _scratch: &'a mut [f32]) -> &'a [f32] {
        &self.w[j * self.k..(j + 1) * self.k]
    }

    fn panel<'a>(&'a self, j0: usize, j1: usize, k: usize, _scratch: &'a mut Vec<f32>) -> &'a [f32] {
        &self.w[j0 * k..j1 * k]
    }
}

/// `y[i, j] = Σ_k x[i, k] · w[j, k]` (+ `bias[j]`), `y` is `[m, n]`.
pub fn matmul_nt(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(w.len(), n * k, "matmul_nt: w is not [n, k]");
    matmul(x, bias, m, k, n, &F32Rows { w, k }, true)
}

/// The output matrix, shared by the tasks that each write their own columns.
struct OutPtr(*mut f32);
// SAFETY: the pointer is only written through, by tasks that own disjoint columns of the
// matrix, which outlives them (see `matmul_nt_rows`).
unsafe impl Sync for OutPtr {}

/// As [`matmul_nt`] with the weight rows from any [`WeightRows`].
pub fn matmul_nt_rows(x: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize, rows: &dyn WeightRows) -> Vec<f32> {
    matmul(x, bias, m, k, n, rows, false)
}

/// The two entry points; `borrowed`: the rows' panels are borrowed (f32), not decoded.
fn matmul(x: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize, rows: &dyn WeightRows, borrowed: bool) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "matmul_nt: x is not [m, k]");
    if let Some(b) = bias {
        assert!(b.len() >= n, "matmul_nt: bias shorter than n");
    }
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    if k == 0 {
        for row in y.chunks_exact_mut(n) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = 0.0 + bias.map_or(0.0, |b| b[j]);
            }
        }
        return y;
    }
    let out = OutPtr(y.as_mut_ptr());
    // Each task owns the output columns `j0..j1` (all `m` rows): it reads its weight rows
    // once for every row of `x`.
    if m <= FUSED_MAX_ROWS && rows.has_fused_dot() {
        let sums: Vec<f32> = x.chunks_exact(k).flat_map(super::qdot::block_sums).collect();
        for_tasks(n.div_ceil(COLS_PER_TASK), m * n * k < INLINE_WORK, |task| {
            let out = &out;
            let mut v = [0f32; FUSED_MAX_ROWS];
            for j in task * COLS_PER_TASK..((task + 1) * COLS_PER_TASK).min(n) {
                let b = bias.map_or(0.0, |b| b[j]);
                rows.fused_dots(j, x, &sums, &mut v[..m]);
                for (i, v) in v[..m].iter().enumerate() {
                    // SAFETY: i < m, j < n: inside `y`, and column j is this task's alone.
                    unsafe { *out.0.add(i * n + j) = v + b };
                }
            }
        });
        return y;
    }
    let cols = cols_per_task(k, n, m == 1 && borrowed);
    let packed = pack_for_tiles(x, m, k);
    for_tasks(n.div_ceil(cols), (m + 4) * n * k < 4 * INLINE_WORK, |task| {
        let out = &out;
        let (j0, j1) = (task * cols, ((task + 1) * cols).min(n));
        let mut scratch = PANEL.take();
        let panel = rows.panel(j0, j1, k, &mut scratch);
        assert_eq!(panel.len(), (j1 - j0) * k, "WeightRows::panel: wrong size");
        // SAFETY: `y` is `[m, n]` and outlives the tasks; this task writes only its columns
        // j0..j1; `packed` was packed from `x`.
        unsafe { block(x, packed.as_deref(), m, k, panel, bias.map(|b| &b[j0..j1]), out.0.add(j0), n) };
        PANEL.set(scratch);
    });
    y
}

/// `x` packed in row pairs for the AVX-512 tiles when the CPU has them and there are
/// several rows (one row keeps the AVX2 `1 × NR1` tiles); else `None`.
fn pack_for_tiles(x: &[f32], m: usize, k: usize) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if m >= 2 && super::tile512::available() {
        return Some(super::tile512::pack_pairs(x, m, k));
    }
    let _ = (x, m, k);
    None
}

/// Below about this much work, a matmul runs on the calling thread: a rayon call from
/// outside the pool is a round trip to a worker and back (tens of microseconds on a busy
/// machine), more than the work (decode's K/V projections). Counted in multiply-adds of
/// the fused quantised kernels; an f32 tile's multiply-add is about a quarter of one, and
/// reading (or decoding) a weight about one.
const INLINE_WORK: usize = 1 << 18;

/// `f(task)` for every task: in parallel, or in order on this thread when `inline`.
fn for_tasks(tasks: usize, inline: bool, f: impl Fn(usize) + Sync + Send) {
    if inline {
        (0..tasks).for_each(f);
    } else {
        (0..tasks).into_par_iter().for_each(f);
    }
}

thread_local! {
    /// Each worker's buffer for decoded weight panels, kept between calls.
    static PANEL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Output columns per task of the tiled path: at least a tile wide, small enough for four
/// tasks per thread when `n` allows, and a panel of weight rows that fits in L2 (which
/// only matters when it is decoded or read more than once: `streamed` is one activation
/// row over borrowed f32 rows).
fn cols_per_task(k: usize, n: usize, streamed: bool) -> usize {
    const UNIT: usize = 24; // a multiple of NR and NR1
    let threads = rayon::current_num_threads().max(1);
    let balanced = n.div_ceil(4 * threads).div_ceil(UNIT) * UNIT;
    let fit = if streamed { usize::MAX } else { (PANEL_BYTES / (4 * k)) / UNIT * UNIT };
    balanced.min(fit).max(UNIT)
}

/// `y[i, j] = x[i] · w[j] + bias[j]` for all `m` rows of `x` and the `nb` rows of the panel
/// `w` (`[nb, k]`), written at `y + i·ldy + j`.
///
/// `packed`: `x` packed by [`pack_for_tiles`] (the AVX-512 tiles), or `None`.
///
/// # Safety
/// `y + i·ldy + j` is writable for `i < m`, `j < nb`, and no other thread accesses those;
/// `packed`, if any, was packed from `x` by [`pack_for_tiles`].
#[allow(clippy::too_many_arguments)]
unsafe fn block(x: &[f32], packed: Option<&[f32]>, m: usize, k: usize, w: &[f32], bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
    let nb = w.len() / k;
    #[cfg(target_arch = "x86_64")]
    if let Some(xp) = packed {
        // SAFETY: packed only when AVX-512 is available (`pack_for_tiles`); the caller's
        // contract covers `y`.
        unsafe { super::tile512::block(x, xp, m, k, w, nb, bias, y, ldy) };
        return;
    }
    let _ = packed;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA checked; the caller's contract covers `y`.
        unsafe { avx2::block(x, m, k, w, nb, bias, y, ldy) };
        return;
    }
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..nb {
            let v = dot_portable(xr, &w[j * k..(j + 1) * k]) + bias.map_or(0.0, |b| b[j]);
            // SAFETY: i < m, j < nb (the caller's contract).
            unsafe { *y.add(i * ldy + j) = v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{KC, MB, MR, NR, NR1};
    use std::arch::x86_64::*;

    /// The canonical horizontal sum: `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        _mm_cvtss_f32(q)
    }

    /// `x[i] · w[j]` for `MR` rows of `x` (at stride `ldx`) and `NR` rows of `w` (at stride
    /// `ldw`), `k` elements each, in the canonical order (one accumulator per output, kept
    /// in a register).
    ///
    /// # Safety
    /// AVX2 and FMA available; `k` floats readable at `x + i·ldx` (`i < MR`) and
    /// `w + j·ldw` (`j < NR`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn tile<const M: usize, const N: usize>(x: *const f32, ldx: usize, w: *const f32, ldw: usize, k: usize) -> [[f32; N]; M] {
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        let k8 = k & !7;
        let mut t = 0;
        // SAFETY: every load reads 8 floats at t + 8 <= k of a row the contract covers.
        unsafe {
            while t < k8 {
                let mut wv = [_mm256_setzero_ps(); N];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(w.add(j * ldw + t));
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(i * ldx + t));
                    for (a, v) in acc_i.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(xv, *v, *a);
                    }
                }
                t += 8;
            }
        }
        let mut out = [[0f32; N]; M];
        for (i, (o_i, acc_i)) in out.iter_mut().zip(&acc).enumerate() {
            for (j, (o, a)) in o_i.iter_mut().zip(acc_i).enumerate() {
                let mut s = hsum(*a);
                for t in k8..k {
                    // SAFETY: t < k, inside both rows.
                    s += unsafe { *x.add(i * ldx + t) * *w.add(j * ldw + t) };
                }
                *o = s;
            }
        }
        out
    }

    /// One tile of outputs at rows `i0..i0+M` and panel rows `j0..j0+N`, stored with bias.
    ///
    /// # Safety
    /// As [`tile`] for the rows of `x` and `w` (both of stride `k`); `y + i·ldy + j`
    /// writable for the tile's `(i, j)`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn store<const M: usize, const N: usize>(x: &[f32], w: &[f32], k: usize, i0: usize, j0: usize, bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
        // SAFETY: the caller's contract.
        let v = unsafe { tile::<M, N>(x.as_ptr().add(i0 * k), k, w.as_ptr().add(j0 * k), k, k) };
        for (i, row) in v.iter().enumerate() {
            for (j, s) in row.iter().enumerate() {
                let b = bias.map_or(0.0, |b| b[j0 + j]);
                // SAFETY: the caller's contract.
                unsafe { *y.add((i0 + i) * ldy + j0 + j) = *s + b };
            }
        }
    }

    /// All rows of `x` (`[m, k]`) against all rows of the panel `w` (`[nb, k]`).
    ///
    /// # Safety
    /// AVX2 and FMA available; `x.len() >= m·k`, `w.len() >= nb·k`; `y + i·ldy + j`
    /// writable for `i < m`, `j < nb`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block(x: &[f32], m: usize, k: usize, w: &[f32], nb: usize, bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
        assert!(x.len() >= m * k && w.len() >= nb * k);
        if m == 1 {
            // SAFETY: the caller's contract.
            unsafe { row1(x, k, w, nb, bias, y) };
            return;
        }
        // Blocks of MB activation rows × passes over at most KC of k: the block's slice of
        // x stays in L1 while the weight tiles (the panel is in L2) pass it, each tile
        // used by every MR-row group of the block before the next is loaded.
        let k8 = k & !7;
        let passes = k8.div_ceil(KC).max(1);
        let kc = k8.div_ceil(passes).next_multiple_of(8);
        let mut accs = ACCS.take();
        if passes > 1 {
            accs.resize(MB * nb * 8, 0.0);
        }
        let mut i0 = 0;
        while i0 < m {
            let mb = (m - i0).min(MB);
            for p in 0..passes {
                let pass = Pass { t0: (p * kc).min(k8), t1: ((p + 1) * kc).min(k8), first: p == 0, last: p + 1 == passes };
                let mut j = 0;
                while j < nb {
                    let nr = (nb - j).min(NR);
                    let mut i = i0;
                    while i < i0 + mb {
                        let mr = (i0 + mb - i).min(MR);
                        // SAFETY: rows i..i+mr <= m, panel rows j..j+nr <= nb; the caller's
                        // contract; `accs` holds MB × nb accumulators when passes > 1.
                        unsafe { tile_pass(x, k, w, i, mr, j, nr, i - i0, nb, &pass, &mut accs, bias, y, ldy) };
                        i += mr;
                    }
                    j += nr;
                }
            }
            i0 += mb;
        }
        ACCS.set(accs);
    }

    thread_local! {
        /// Each worker's buffer for the 8-lane accumulators kept between passes over `k`.
        static ACCS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    }

    /// One pass over `k`: elements `t0..t1` (multiples of 8, `t1 <= k & !7`); the first
    /// starts the accumulators at zero, the last finishes the outputs (horizontal sum, the
    /// `k % 8` tail, the bias) and stores them.
    struct Pass {
        t0: usize,
        t1: usize,
        first: bool,
        last: bool,
    }

    /// Dispatches an `mr × nr` tile (`mr <= MR`, `nr <= NR`) to [`pass`].
    ///
    /// # Safety
    /// As [`pass`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_pass(x: &[f32], k: usize, w: &[f32], i0: usize, mr: usize, j0: usize, nr: usize, bi: usize, nb: usize, p: &Pass, accs: &mut [f32], bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match (mr, nr) {
                (4, 3) => pass::<4, 3>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (4, 2) => pass::<4, 2>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (4, _) => pass::<4, 1>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (3, 3) => pass::<3, 3>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (3, 2) => pass::<3, 2>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (3, _) => pass::<3, 1>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (2, 3) => pass::<2, 3>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (2, 2) => pass::<2, 2>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (2, _) => pass::<2, 1>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (_, 3) => pass::<1, 3>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                (_, 2) => pass::<1, 2>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
                _ => pass::<1, 1>(x, k, w, i0, j0, bi, nb, p, accs, bias, y, ldy),
            }
        }
    }

    /// Rows `i0..i0+M` of `x` × panel rows `j0..j0+N` over one [`Pass`], in the canonical
    /// order: the accumulator of output `(i0 + i, j0 + j)` lives at `accs[((bi + i)·nb + j0
    /// + j)·8..][..8]` between passes.
    ///
    /// # Safety
    /// AVX2 and FMA available; `x.len() >= (i0 + M)·k`, `w.len() >= (j0 + N)·k`; when the
    /// pass is not both first and last, `accs.len() >= (bi + M)·nb·8`; `y + i·ldy + j`
    /// writable for the tile's outputs.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pass<const M: usize, const N: usize>(x: &[f32], k: usize, w: &[f32], i0: usize, j0: usize, bi: usize, nb: usize, p: &Pass, accs: &mut [f32], bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        let at = |i: usize, j: usize| ((bi + i) * nb + j0 + j) * 8;
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        if !p.first {
            for (i, acc_i) in acc.iter_mut().enumerate() {
                for (j, a) in acc_i.iter_mut().enumerate() {
                    // SAFETY: at(i, j) + 8 <= accs.len() (the contract).
                    *a = unsafe { _mm256_loadu_ps(accs.as_ptr().add(at(i, j))) };
                }
            }
        }
        let mut t = p.t0;
        // SAFETY: every load reads 8 floats at t + 8 <= k of a row the contract covers.
        unsafe {
            while t < p.t1 {
                let mut wv = [_mm256_setzero_ps(); N];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(wp.add((j0 + j) * k + t));
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(xp.add((i0 + i) * k + t));
                    for (a, v) in acc_i.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(xv, *v, *a);
                    }
                }
                t += 8;
            }
        }
        if !p.last {
            for (i, acc_i) in acc.iter().enumerate() {
                for (j, a) in acc_i.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_ps(accs.as_mut_ptr().add(at(i, j)), *a) };
                }
            }
            return;
        }
        let k8 = k & !7;
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, a) in acc_i.iter().enumerate() {
                let mut s = hsum(*a);
                for t in k8..k {
                    // SAFETY: t < k, inside both rows.
                    s += unsafe { *xp.add((i0 + i) * k + t) * *wp.add((j0 + j) * k + t) };
                }
                let b = bias.map_or(0.0, |b| b[j0 + j]);
                // SAFETY: the caller's contract.
                unsafe { *y.add((i0 + i) * ldy + j0 + j) = s + b };
            }
        }
    }

    /// The one activation row of `x` against panel rows `0..nb`, `1 × NR1` tiles.
    ///
    /// # Safety
    /// As [`block`] with `m == 1`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row1(x: &[f32], k: usize, w: &[f32], nb: usize, bias: Option<&[f32]>, y: *mut f32) {
        let mut j0 = 0;
        while j0 < nb {
            let nr = (nb - j0).min(NR1);
            // SAFETY: panel rows j0..j0+nr <= nb, row 0 of x; the caller's contract.
            unsafe {
                match nr {
                    8 => store::<1, 8>(x, w, k, 0, j0, bias, y, 0),
                    7 => store::<1, 7>(x, w, k, 0, j0, bias, y, 0),
                    6 => store::<1, 6>(x, w, k, 0, j0, bias, y, 0),
                    5 => store::<1, 5>(x, w, k, 0, j0, bias, y, 0),
                    4 => store::<1, 4>(x, w, k, 0, j0, bias, y, 0),
                    3 => store::<1, 3>(x, w, k, 0, j0, bias, y, 0),
                    2 => store::<1, 2>(x, w, k, 0, j0, bias, y, 0),
                    _ => store::<1, 1>(x, w, k, 0, j0, bias, y, 0),
                }
            }
            j0 += nr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn val(seed: u32) -> impl Fn(usize) -> f32 {
        move |i: usize| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0
    }

    /// Weight rows stored as f32 but seen through the trait's default (row-by-row) panel.
    struct Rowwise<'w>(&'w [f32], usize);
    impl WeightRows for Rowwise<'_> {
        fn row<'a>(&'a self, j: usize, scratch: &'a mut [f32]) -> &'a [f32] {
            scratch.copy_from_slice(&self.0[j * self.1..(j + 1) * self.1]);
            scratch
        }
    }

    proptest! {
        #[test]
        fn dot_paths_agree(n in 0usize..300, seed in any::<u32>()) {
            let f = val(seed);
            let a: Vec<f32> = (0..n).map(&f).collect();
            let b: Vec<f32> = (0..n).map(|i| f(i + 5)).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            prop_assert!((dot(&a, &b) as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
            prop_assert!((dot_portable(&a, &b) as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
            prop_assert!((matmul_dot(&a, &b) as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
        }

        #[test]
        fn matches_naive(m in 1usize..12, k in 1usize..70, n in 1usize..150, seed in any::<u32>()) {
            let f = val(seed);
            let x: Vec<f32> = (0..m * k).map(&f).collect();
            let w: Vec<f32> = (0..n * k).map(|i| f(i + 7919)).collect();
            let bias: Vec<f32> = (0..n).map(|i| f(i + 31)).collect();
            let y = matmul_nt(&x, &w, Some(&bias), m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() + bias[j] as f64;
                    prop_assert!((y[i * n + j] as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
                }
            }
        }

        /// Batch invariance: each output row is bit-identical to the same row computed
        /// alone, to the canonical single-output dot, and through a row-by-row WeightRows;
        /// and close to an f64 reference.
        #[test]
        fn rows_are_batch_invariant(m in 1usize..40, k in 1usize..200, n in 1usize..120, bias_on in any::<bool>(), seed in any::<u32>()) {
            let f = val(seed);
            let x: Vec<f32> = (0..m * k).map(|i| f(i) * 0.37).collect();
            let w: Vec<f32> = (0..n * k).map(|i| f(i + 7919)).collect();
            let bias: Vec<f32> = (0..n).map(|i| f(i + 31)).collect();
            let b = if bias_on { Some(&bias[..]) } else { None };
            let y = matmul_nt(&x, &w, b, m, k, n);
            let y_rows = matmul_nt_rows(&x, b, m, k, n, &Rowwise(&w, k));
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&y), bits(&y_rows));
            for i in 0..m {
                let xi = &x[i * k..(i + 1) * k];
                let alone = matmul_nt(xi, &w, b, 1, k, n);
                prop_assert_eq!(bits(&y[i * n..(i + 1) * n]), bits(&alone), "row {} of {}", i, m);
                let alone_rows = matmul_nt_rows(xi, b, 1, k, n, &Rowwise(&w, k));
                prop_assert_eq!(bits(&alone), bits(&alone_rows));
                for j in 0..n {
                    let single = matmul_dot(xi, &w[j * k..(j + 1) * k]) + b.map_or(0.0, |b| b[j]);
                    prop_assert_eq!(y[i * n + j].to_bits(), single.to_bits(), "({}, {})", i, j);
                    let want: f64 = (0..k).map(|t| xi[t] as f64 * w[j * k + t] as f64).sum::<f64>() + b.map_or(0.0, |b| b[j] as f64);
                    let scale: f64 = (0..k).map(|t| (xi[t] as f64 * w[j * k + t] as f64).abs()).sum::<f64>() + 1.0;
                    prop_assert!((y[i * n + j] as f64 - want).abs() <= 1e-5 * scale, "({}, {}): {} vs {}", i, j, y[i * n + j], want);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Rows longer than one pass over `k` (odd lengths, odd row and column counts): the
        /// bits of the canonical single-output dot, and close to an f64 reference.
        #[test]
        fn long_rows_in_passes(m in 2usize..20, k in 577usize..1800, n in 1usize..30, seed in any::<u32>()) {
            let f = val(seed);
            let x: Vec<f32> = (0..m * k).map(|i| f(i) * 0.1).collect();
            let w: Vec<f32> = (0..n * k).map(|i| f(i + 11)).collect();
            let bias: Vec<f32> = (0..n).map(|i| f(i + 5)).collect();
            let y = matmul_nt(&x, &w, Some(&bias), m, k, n);
            for i in 0..m {
                let xi = &x[i * k..(i + 1) * k];
                for j in 0..n {
                    let wj = &w[j * k..(j + 1) * k];
                    prop_assert_eq!(y[i * n + j].to_bits(), (matmul_dot(xi, wj) + bias[j]).to_bits(), "({}, {})", i, j);
                    let want: f64 = (0..k).map(|t| xi[t] as f64 * wj[t] as f64).sum::<f64>() + bias[j] as f64;
                    let scale: f64 = (0..k).map(|t| (xi[t] as f64 * wj[t] as f64).abs()).sum::<f64>() + 1.0;
                    prop_assert!((y[i * n + j] as f64 - want).abs() <= 1e-5 * scale);
                }
            }
        }
    }

    /// Sub-matrices of a larger product (a prefix of rows, a batch with other rows around
    /// it) give the same bits, at the model's shapes where tasks are several tiles wide.
    #[test]
    fn invariant_at_model_shapes() {
        let f = val(12345);
        for (k, n) in [(576, 192), (1536, 576), (64, 1000)] {
            let m = 37;
            let x: Vec<f32> = (0..m * k).map(|i| f(i) * 0.1).collect();
            let w: Vec<f32> = (0..n * k).map(|i| f(i + 3)).collect();
            let y = matmul_nt(&x, &w, None, m, k, n);
            for (r0, r1) in [(0, 1), (5, 21), (36, 37), (0, 4), (3, 8)] {
                let part = matmul_nt(&x[r0 * k..r1 * k], &w, None, r1 - r0, k, n);
                assert!(part.iter().zip(&y[r0 * n..r1 * n]).all(|(a, b)| a.to_bits() == b.to_bits()), "k {k} n {n} rows {r0}..{r1}");
            }
        }
    }
}
