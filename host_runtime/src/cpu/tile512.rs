//! AVX-512 tiles for the several-row f32 matmul, in the canonical order of
//! [`super::matmul_nt`] (bit for bit the AVX2 path's outputs).
//!
//! Each 512-bit register holds the two 8-lane accumulators of one weight row against a
//! *pair* of activation rows: lanes 0..8 for the even row, 8..16 for the odd one. The
//! activations are packed once per matmul into pairs (see [`pack_pairs`]); each step
//! broadcasts 8 weights to both halves and does one 16-lane FMA, which is exactly the two
//! 8-lane FMAs of the canonical order (FMA rounds once per lane, whatever the width). The
//! halves are then summed by the canonical horizontal sum, the `k % 8` tail and the bias
//! follow as in the AVX2 path. So a row's bits do not depend on its partner, on `m`, or on
//! whether the CPU has AVX-512 (the AVX2 tiles and `matmul_dot` give the same bits).
//!
//! Tiles are 4 pairs (8 rows) × 6 weight rows: 24 accumulators + 6 weight vectors + 1
//! activation vector of the 32 registers. Rows longer than `KC` run in passes over `k`, the
//! accumulators stored whole between passes (as in the AVX2 path).

use std::arch::x86_64::*;

/// Pairs of activation rows × weight rows of the register tile.
const PR: usize = 4;
const NR: usize = 6;

/// At most this many elements of `k` per pass: the block's 8 packed rows (18 KB) and one
/// weight tile (14 KB) stay in the 48 KB L1 for the pass.
const KC: usize = 576;

/// True when the CPU has AVX-512F (besides AVX2 and FMA), checked once.
pub(super) fn available() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| super::matmul::has_avx2_fma() && is_x86_feature_detected!("avx512f"))
}

/// `x` (`[m, k]`) packed as row pairs: `[m.div_ceil(2)][k / 8][16]`, chunk `c` of pair `p`
/// holding `x[2p][8c..8c + 8]` then `x[2p + 1][8c..8c + 8]` (zeros past the last row).
/// The `k % 8` tail is not packed (the tiles read it from `x`).
pub(super) fn pack_pairs(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let c8 = k / 8;
    let mut out = vec![0f32; m.div_ceil(2) * c8 * 16];
    if c8 == 0 {
        return out;
    }
    let pack = |(p, dst): (usize, &mut [f32])| {
        for half in 0..2.min(m - 2 * p) {
            let row = &x[(2 * p + half) * k..][..c8 * 8];
            for (c, src) in row.chunks_exact(8).enumerate() {
                dst[c * 16 + half * 8..][..8].copy_from_slice(src);
            }
        }
    };
    // Large batches (prefill) pack in parallel: a serial copy of megabytes would leave the
    // other threads idle for a noticeable share of the matmul.
    if m * k >= 1 << 18 {
        use rayon::prelude::*;
        out.par_chunks_mut(c8 * 16).enumerate().with_min_len(16).for_each(pack);
    } else {
        out.chunks_mut(c8 * 16).enumerate().for_each(pack);
    }
    out
}

/// Where the outputs go: `y + i·ldy + j`, plus `bias[j]`.
struct Out<'a> {
    bias: Option<&'a [f32]>,
    y: *mut f32,
    ldy: usize,
    /// Valid rows of the matmul (the odd last pair's upper half is padding).
    m: usize,
}

/// One pass over `k`: chunks `c0..c1` of 8 (`c1 <= k / 8`); the first starts the
/// accumulators at zero, the last finishes the outputs and stores them.
struct Pass {
    c0: usize,
    c1: usize,
    first: bool,
    last: bool,
}

/// All rows of `x` (`[m, k]`, `xp` = [`pack_pairs`] of it) against all rows of the panel `w`
/// (`[nb, k]`): `y[i·ldy + j] = x[i] · w[j] + bias[j]`.
///
/// # Safety
/// AVX2, FMA and AVX-512F available ([`available`]); `x.len() >= m·k`, `xp` packed from it,
/// `w.len() >= nb·k`, `bias` (if any) `>= nb` long; `y + i·ldy + j` writable for `i < m`,
/// `j < nb`, and no other thread accesses those.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block(x: &[f32], xp: &[f32], m: usize, k: usize, w: &[f32], nb: usize, bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
    let c8 = k / 8;
    assert!(x.len() >= m * k && w.len() >= nb * k && xp.len() >= m.div_ceil(2) * c8 * 16);
    let passes = c8.div_ceil(KC / 8).max(1);
    let cp = c8.div_ceil(passes);
    let out = Out { bias, y, ldy, m };
    let pairs = m.div_ceil(2);
    let mut accs = ACCS.take();
    if passes > 1 {
        accs.resize(PR * nb * 16, 0.0);
    }
    let mut p0 = 0;
    while p0 < pairs {
        let pr = (pairs - p0).min(PR);
        for p in 0..passes {
            let pass = Pass { c0: (p * cp).min(c8), c1: ((p + 1) * cp).min(c8), first: p == 0, last: p + 1 == passes };
            let mut j = 0;
            while j < nb {
                let nr = if nb - j >= NR { NR } else { 1 };
                let at = Tile { p0, j0: j, nb };
                // SAFETY: pairs p0..p0+pr <= pairs, panel rows j..j+nr <= nb; `accs` holds
                // PR × nb accumulators when passes > 1; the caller's contract.
                unsafe { dispatch(x, xp, k, w, pr, nr, &at, &pass, &mut accs, &out) };
                j += nr;
            }
        }
        p0 += pr;
    }
    ACCS.set(accs);
}

thread_local! {
    /// Each worker's buffer for the accumulators kept between passes over `k`.
    static ACCS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A tile's place: pairs from `p0`, panel rows from `j0` of `nb`.
struct Tile {
    p0: usize,
    j0: usize,
    nb: usize,
}

/// Picks the tile size (`pr` pairs × `nr` weight rows, `nr` is `NR` or 1).
///
/// # Safety
/// As [`tile`].
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch(x: &[f32], xp: &[f32], k: usize, w: &[f32], pr: usize, nr: usize, at: &Tile, pass: &Pass, accs: &mut [f32], out: &Out) {
    // SAFETY: the caller's contract.
    unsafe {
        match (pr, nr) {
            (4, 6) => tile::<4, 6>(x, xp, k, w, at, pass, accs, out),
            (3, 6) => tile::<3, 6>(x, xp, k, w, at, pass, accs, out),
            (2, 6) => tile::<2, 6>(x, xp, k, w, at, pass, accs, out),
            (1, 6) => tile::<1, 6>(x, xp, k, w, at, pass, accs, out),
            (4, _) => tile::<4, 1>(x, xp, k, w, at, pass, accs, out),
            (3, _) => tile::<3, 1>(x, xp, k, w, at, pass, accs, out),
            (2, _) => tile::<2, 1>(x, xp, k, w, at, pass, accs, out),
            _ => tile::<1, 1>(x, xp, k, w, at, pass, accs, out),
        }
    }
}

/// Pairs `p0..p0+P` × panel rows `j0..j0+N` over one [`Pass`]; the accumulator of pair
/// `p0 + p` and panel row `j0 + j` lives at `accs[((p0 + p) % PR · nb + j0 + j) · 16..]`
/// between passes.
///
/// # Safety
/// AVX2, FMA and AVX-512F available; the pairs and panel rows exist in `xp` and `w`; when
/// the pass is not both first and last, `accs.len() >= PR·nb·16`; the outputs of valid
/// rows are writable (the [`block`] contract).
#[target_feature(enable = "avx2,fma,avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const P: usize, const N: usize>(x: &[f32], xp: &[f32], k: usize, w: &[f32], at: &Tile, pass: &Pass, accs: &mut [f32], out: &Out) {
    let c8 = k / 8;
    let slot = |p: usize, j: usize| (((at.p0 + p) % PR) * at.nb + at.j0 + j) * 16;
    let mut acc = [[_mm512_setzero_ps(); N]; P];
    if !pass.first {
        for (p, acc_p) in acc.iter_mut().enumerate() {
            for (j, a) in acc_p.iter_mut().enumerate() {
                // SAFETY: slot(p, j) + 16 <= accs.len() (the contract).
                *a = unsafe { _mm512_loadu_ps(accs.as_ptr().add(slot(p, j))) };
            }
        }
    }
    let (xq, wp) = (xp.as_ptr(), w.as_ptr());
    // SAFETY: chunk c < c8 of each pair and of each panel row lies inside `xp` / `w`.
    unsafe {
        for c in pass.c0..pass.c1 {
            let mut wv = [_mm512_setzero_ps(); N];
            for (j, v) in wv.iter_mut().enumerate() {
                let w8 = _mm256_loadu_pd(wp.add((at.j0 + j) * k + 8 * c) as *const f64);
                *v = _mm512_castpd_ps(_mm512_broadcast_f64x4(w8));
            }
            for (p, acc_p) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(xq.add(((at.p0 + p) * c8 + c) * 16));
                for (a, v) in acc_p.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, *v, *a);
                }
            }
        }
    }
    if !pass.last {
        for (p, acc_p) in acc.iter().enumerate() {
            for (j, a) in acc_p.iter().enumerate() {
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(accs.as_mut_ptr().add(slot(p, j)), *a) };
            }
        }
        return;
    }
    for (p, acc_p) in acc.iter().enumerate() {
        for (j, a) in acc_p.iter().enumerate() {
            let halves = [_mm512_castps512_ps256(*a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*a), 1))];
            for (half, h) in halves.iter().enumerate() {
                let i = 2 * (at.p0 + p) + half;
                if i < out.m {
                    // SAFETY: row i < m, panel row j0 + j < nb: the caller's contract.
                    unsafe { finish(x, k, c8 * 8, w, i, at.j0 + j, *h, out) };
                }
            }
        }
    }
}

/// Output `(i, j)` from its 8-lane accumulator: the canonical horizontal sum, the `k % 8`
/// tail (`t` from `k8`), the bias; stored at `y + i·ldy + j`.
///
/// # Safety
/// AVX2 and FMA available; row `i` of `x` and row `j` of `w` exist; the output is writable.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn finish(x: &[f32], k: usize, k8: usize, w: &[f32], i: usize, j: usize, acc: __m256, out: &Out) {
    let mut s = super::matmul::hsum_canonical(acc);
    for t in k8..k {
        s += x[i * k + t] * w[j * k + t];
    }
    let b = out.bias.map_or(0.0, |b| b[j]);
    // SAFETY: the caller's contract.
    unsafe { *out.y.add(i * out.ldy + j) = s + b };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn val(seed: u32) -> impl Fn(usize) -> f32 {
        move |i: usize| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The AVX-512 tiles give the canonical single-output dot's bits (odd `m`, `k`
        /// and `nb`, several passes over `k`), and are close to an f64 reference.
        #[test]
        fn tiles_match_canonical_dot(m in 1usize..20, k in 1usize..1300, nb in 1usize..20, bias_on in any::<bool>(), seed in any::<u32>()) {
            if !available() {
                return Ok(());
            }
            let f = val(seed);
            let x: Vec<f32> = (0..m * k).map(|i| f(i) * 0.3).collect();
            let w: Vec<f32> = (0..nb * k).map(|i| f(i + 7919)).collect();
            let bias: Vec<f32> = (0..nb).map(|i| f(i + 31)).collect();
            let b = bias_on.then_some(&bias[..]);
            let ldy = nb + 3;
            let mut y = vec![f32::NAN; m * ldy];
            let xp = pack_pairs(&x, m, k);
            // SAFETY: available() checked; y is [m, ldy] with ldy >= nb.
            unsafe { block(&x, &xp, m, k, &w, nb, b, y.as_mut_ptr(), ldy) };
            for i in 0..m {
                let xi = &x[i * k..(i + 1) * k];
                for j in 0..nb {
                    let wj = &w[j * k..(j + 1) * k];
                    let want_bits = (super::super::matmul_dot(xi, wj) + b.map_or(0.0, |b| b[j])).to_bits();
                    prop_assert_eq!(y[i * ldy + j].to_bits(), want_bits, "({}, {})", i, j);
                    let want: f64 = xi.iter().zip(wj).map(|(a, c)| *a as f64 * *c as f64).sum::<f64>() + b.map_or(0.0, |b| b[j] as f64);
                    let scale: f64 = xi.iter().zip(wj).map(|(a, c)| (*a as f64 * *c as f64).abs()).sum::<f64>() + 1.0;
                    prop_assert!((y[i * ldy + j] as f64 - want).abs() <= 1e-5 * scale);
                }
                prop_assert!(y[i * ldy + nb..(i + 1) * ldy].iter().all(|v| v.is_nan()), "wrote past the panel");
            }
        }
    }
}
