//! One query row of softmax attention over keys and values stored as separate rows (the
//! inner loop of the CPU backend's causal attention): `out = Σ_j softmax(scale · q·k_j)_j v_j`.
//!
//! With AVX2+FMA and a head dimension that is a multiple of 8, scores are computed eight
//! keys at a time, the exponentials with a vectorised `expf` (Cephes' polynomial, within
//! about 2 ulp of libm) and the weighted sum of values with the output row kept in
//! registers; otherwise a portable loop. Either way the result depends only on `q`, the
//! keys and values and their count (never on which other rows or sequences are computed
//! alongside), so a sequence's attention is the same alone or in a batch.

/// `out = Σ_j p_j · values[j][off..off + d]` with
/// `p = softmax(scale · q · keys[j][off..off + d])` over `j < keys.len()`,
/// `d = q.len() = out.len()`. `scores` is scratch (resized).
/// `keys` and `values` have the same length (at least one); every row holds `off + d`
/// elements.
pub fn attend_row(q: &[f32], keys: &[&[f32]], values: &[&[f32]], off: usize, scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    attend_rows(q, 1, keys, values, off, scale, scores, out);
}

/// [`attend_row`] for `g` query rows that share the keys and values (the query heads of
/// one KV head): `q` and `out` are `[g, d]`. Each key and value row is read once for all
/// of them; every output row has the same bits as [`attend_row`] of its query alone.
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(q: &[f32], g: usize, keys: &[&[f32]], values: &[&[f32]], off: usize, scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    let n = keys.len();
    assert!(g > 0 && q.len().is_multiple_of(g) && out.len() == q.len(), "attend_rows: q and out are not [g, d]");
    let d = q.len() / g;
    assert!(n > 0 && values.len() == n, "attend_rows: shapes");
    assert!(keys.iter().chain(values).all(|r| r.len() >= off + d), "attend_rows: row shorter than off + d");
    let n8 = n.next_multiple_of(8);
    scores.resize(g * n8, 0.0);
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(8) && super::matmul::has_avx2_fma() {
        let mut at = 0;
        while at < g {
            let gg = (g - at).min(3);
            let (qs, os, ss) = (&q[at * d..(at + gg) * d], &mut out[at * d..(at + gg) * d], &mut scores[at * n8..(at + gg) * n8]);
            // SAFETY: AVX2+FMA checked at run time; rows hold `off + d` floats (asserted),
            // `d` is a multiple of 8; `qs`, `os` are `[gg, d]`, `ss` is `[gg, n8]`.
            unsafe {
                match gg {
                    3 => avx2::attend_rows::<3>(qs, keys, values, off, scale, ss, os),
                    2 => avx2::attend_rows::<2>(qs, keys, values, off, scale, ss, os),
                    _ => avx2::attend_rows::<1>(qs, keys, values, off, scale, ss, os),
                }
            }
            at += gg;
        }
        return;
    }
    for (qi, o) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        portable(qi, keys, values, off, scale, &mut scores[..n8], o);
    }
}

/// The portable path (also the reference the AVX2 path is tested against).
fn portable(q: &[f32], keys: &[&[f32]], values: &[&[f32]], off: usize, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let d = q.len();
    let n = keys.len();
    for (s, k) in scores.iter_mut().zip(keys) {
        *s = super::matmul::dot_portable(q, &k[off..off + d]) * scale;
    }
    let max = scores[..n].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in scores[..n].iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (w, v) in scores[..n].iter().zip(values) {
        for (o, x) in out.iter_mut().zip(&v[off..off + d]) {
            *o += w * x;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    /// `e^x` of eight f32 (Cephes `expf`): `x = n·ln2 + r` (two-part ln2), a degree-6
    /// polynomial of `r`, times `2^n` built in the exponent. Inputs are clamped to
    /// `[-87.3, 88.7]` (below, the result is about 1e-38 instead of a subnormal or 0).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp_ps(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.336_55)), _mm256_set1_ps(88.722_84));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    /// Prefetches `row[off..off + d]` into the caches (every 64-byte line of it).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn prefetch_row(row: &[f32], off: usize, d: usize) {
        let lines = row[off..off + d].iter().step_by(16).chain(row[off + d - 1..off + d].iter());
        for v in lines {
            _mm_prefetch::<_MM_HINT_T0>(v as *const f32 as *const i8);
        }
    }

    /// The eight sums of `a[0..8]`'s lanes, in one vector (lane `r` = Σ lanes of `a[r]`).
    #[target_feature(enable = "avx2,fma")]
    fn hsum8(a: [__m256; 8]) -> __m256 {
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1); // [a0 a1 a2 a3 | a0 a1 a2 a3] low and high halves
        let u1 = _mm256_hadd_ps(t2, t3);
        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(u0, u1), _mm256_permute2f128_ps::<0x31>(u0, u1))
    }

    /// See [`super::attend_rows`]: `G` queries (`q`, `out`: `[G, d]`; `scores`: `[G, n8]`
    /// with `n8` = `n` rounded up to 8). Per query, the same operations in the same order
    /// whatever `G`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `d` a multiple of 8; every row of `keys` and `values` (as
    /// many) holds `off + d` floats; the shapes above.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attend_rows<const G: usize>(q: &[f32], keys: &[&[f32]], values: &[&[f32]], off: usize, scale: f32, scores: &mut [f32], out: &mut [f32]) {
        let (d, n) = (q.len() / G, keys.len());
        let n8 = n.next_multiple_of(8);
        let sc = scores.as_mut_ptr();
        let vscale = _mm256_set1_ps(scale);
        // Scores, eight keys at a time (eight independent accumulators), for each query
        // while the eight key rows are in L1.
        // The rows come from DRAM (the KV cache is far larger than the caches): keys are
        // asked for `KEYS_AHEAD` ahead of their scores (one block of eight keys is a few
        // tens of nanoseconds of work, a DRAM miss over a hundred), values a block at a
        // time during the scores (they are read right after).
        const KEYS_AHEAD: usize = 16;
        for key in &keys[..n.min(KEYS_AHEAD)] {
            prefetch_row(key, off, d);
        }
        let mut j = 0;
        while j + 8 <= n {
            for r in 0..8 {
                if j + KEYS_AHEAD + r < n {
                    prefetch_row(keys[j + KEYS_AHEAD + r], off, d);
                }
                prefetch_row(values[j + r], off, d);
            }
            for g in 0..G {
                let qg = q[g * d..].as_ptr();
                let mut acc = [_mm256_setzero_ps(); 8];
                let mut c = 0;
                while c < d {
                    // SAFETY: c + 8 <= d; rows hold off + d floats (the contract).
                    unsafe {
                        let qv = _mm256_loadu_ps(qg.add(c));
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys[j + r].as_ptr().add(off + c)), *a);
                        }
                    }
                    c += 8;
                }
                // SAFETY: g·n8 + j + 8 <= G·n8.
                unsafe { _mm256_storeu_ps(sc.add(g * n8 + j), _mm256_mul_ps(hsum8(acc), vscale)) };
            }
            j += 8;
        }
        while j < n {
            for g in 0..G {
                let qg = q[g * d..].as_ptr();
                let mut a = _mm256_setzero_ps();
                let mut c = 0;
                while c < d {
                    // SAFETY: as above.
                    unsafe { a = _mm256_fmadd_ps(_mm256_loadu_ps(qg.add(c)), _mm256_loadu_ps(keys[j].as_ptr().add(off + c)), a) };
                    c += 8;
                }
                let s = hsum8([a, a, a, a, a, a, a, a]);
                // SAFETY: j < n.
                unsafe { *sc.add(g * n8 + j) = _mm256_cvtss_f32(_mm256_mul_ps(s, vscale)) };
            }
            j += 1;
        }
        // Softmax numerators per query: lanes past n are set to -inf first (for the max),
        // then to zero (they add nothing).
        let mut inv = [_mm256_setzero_ps(); G];
        for (g, inv) in inv.iter_mut().enumerate() {
            let row = &mut scores[g * n8..(g + 1) * n8];
            for s in &mut row[n..] {
                *s = f32::NEG_INFINITY;
            }
            let rp = row.as_mut_ptr();
            let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
            for j in (0..n8).step_by(8) {
                // SAFETY: j + 8 <= n8 = row.len().
                vmax = _mm256_max_ps(vmax, unsafe { _mm256_loadu_ps(rp.add(j)) });
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps::<1>(vmax));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m4 = _mm_max_ss(m4, _mm_shuffle_ps::<1>(m4, m4));
            let vmax = _mm256_broadcastss_ps(m4);
            for j in (0..n8).step_by(8) {
                // SAFETY: as above.
                unsafe { _mm256_storeu_ps(rp.add(j), exp_ps(_mm256_sub_ps(_mm256_loadu_ps(rp.add(j)), vmax))) };
            }
            for s in &mut row[n..] {
                *s = 0.0;
            }
            let rp = row.as_ptr();
            let mut vsum = _mm256_setzero_ps();
            for j in (0..n8).step_by(8) {
                // SAFETY: as above.
                vsum = _mm256_add_ps(vsum, unsafe { _mm256_loadu_ps(rp.add(j)) });
            }
            *inv = _mm256_div_ps(_mm256_set1_ps(1.0), hsum8([vsum; 8]));
        }
        // Weighted sum of values, 32 output lanes of every query at a time kept in
        // registers (each lane is its own chain over j, so the chunking does not change
        // the bits).
        let mut c0 = 0;
        while c0 < d {
            let w = (d - c0).min(32) / 8;
            let mut acc = [[_mm256_setzero_ps(); 4]; G];
            for (j, v) in values.iter().enumerate() {
                // SAFETY: j < n; c0 + 8·w <= d; rows hold off + d floats.
                unsafe {
                    let vp = v.as_ptr().add(off + c0);
                    for (g, acc_g) in acc.iter_mut().enumerate() {
                        let p = _mm256_broadcast_ss(&*sc.add(g * n8 + j));
                        if w == 4 {
                            for (r, a) in acc_g.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(vp.add(8 * r)), *a);
                            }
                        } else {
                            for (r, a) in acc_g[..w].iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(vp.add(8 * r)), *a);
                            }
                        }
                    }
                }
            }
            for (g, acc_g) in acc.iter().enumerate() {
                for (r, a) in acc_g[..w].iter().enumerate() {
                    // SAFETY: g·d + c0 + 8·r + 8 <= G·d = out.len().
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(g * d + c0 + 8 * r), _mm256_mul_ps(*a, inv[g])) };
                }
            }
            c0 += 8 * w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn val(seed: u32, i: usize) -> f32 {
        (((i as u32).wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 500.0 - 2.0
    }

    /// f64 reference.
    fn reference(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], off: usize, scale: f32) -> Vec<f64> {
        let d = q.len();
        let s: Vec<f64> = keys.iter().map(|k| (0..d).map(|c| q[c] as f64 * k[off + c] as f64).sum::<f64>() * scale as f64).collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..d).map(|c| e.iter().zip(values).map(|(p, v)| p * v[off + c] as f64).sum::<f64>() / sum).collect()
    }

    proptest! {
        /// Both paths against the f64 reference at odd sizes, and the AVX2 exp against libm.
        #[test]
        fn matches_f64_reference(d in 1usize..40, n in 1usize..70, off_rows in 0usize..3, scale in 0.05f32..2.0, seed in any::<u32>()) {
            let d = if seed % 3 == 0 { d * 8 } else { d };
            let off = off_rows * d;
            let row = off + d + (seed % 5) as usize;
            let q: Vec<f32> = (0..d).map(|i| val(seed, i)).collect();
            let keys: Vec<Vec<f32>> = (0..n).map(|j| (0..row).map(|i| val(seed ^ 0x55, j * row + i)).collect()).collect();
            let values: Vec<Vec<f32>> = (0..n).map(|j| (0..row).map(|i| val(seed ^ 0xaa, j * row + i)).collect()).collect();
            let kr: Vec<&[f32]> = keys.iter().map(|r| &r[..]).collect();
            let vr: Vec<&[f32]> = values.iter().map(|r| &r[..]).collect();
            let want = reference(&q, &keys, &values, off, scale);
            let (mut s, mut out, mut out_p) = (Vec::new(), vec![f32::NAN; d], vec![f32::NAN; d]);
            attend_row(&q, &kr, &vr, off, scale, &mut s, &mut out);
            let mut s2 = vec![0.0; n.next_multiple_of(8)];
            portable(&q, &kr, &vr, off, scale, &mut s2, &mut out_p);
            for c in 0..d {
                prop_assert!((out[c] as f64 - want[c]).abs() <= 2e-5 * (1.0 + want[c].abs()), "{} vs {}", out[c], want[c]);
                prop_assert!((out_p[c] as f64 - want[c]).abs() <= 2e-5 * (1.0 + want[c].abs()));
            }
            // The same query again, with more rows around it in the scratch: the same bits.
            let mut s3 = vec![7.0; 300];
            let mut again = vec![0.0; d];
            attend_row(&q, &kr, &vr, off, scale, &mut s3, &mut again);
            prop_assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), again.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
    }

    proptest! {
        /// A group of queries sharing keys and values: each output row has the bits of its
        /// query alone.
        #[test]
        fn group_rows_match_single_rows(g in 1usize..6, d8 in 1usize..12, n in 1usize..40, seed in any::<u32>()) {
            let d = if seed % 4 == 0 { d8 * 8 + 3 } else { d8 * 8 };
            let q: Vec<f32> = (0..g * d).map(|i| val(seed, i)).collect();
            let keys: Vec<Vec<f32>> = (0..n).map(|j| (0..d).map(|i| val(seed ^ 1, j * d + i)).collect()).collect();
            let values: Vec<Vec<f32>> = (0..n).map(|j| (0..d).map(|i| val(seed ^ 2, j * d + i)).collect()).collect();
            let kr: Vec<&[f32]> = keys.iter().map(|r| &r[..]).collect();
            let vr: Vec<&[f32]> = values.iter().map(|r| &r[..]).collect();
            let (mut s, mut out) = (Vec::new(), vec![f32::NAN; g * d]);
            attend_rows(&q, g, &kr, &vr, 0, 0.125, &mut s, &mut out);
            for (qi, o) in q.chunks_exact(d).zip(out.chunks_exact(d)) {
                let mut alone = vec![0.0; d];
                attend_row(qi, &kr, &vr, 0, 0.125, &mut s, &mut alone);
                prop_assert_eq!(o.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_ps_close_to_libm() {
        if !crate::cpu::matmul::has_avx2_fma() {
            return;
        }
        for i in 0..20000 {
            let x = -87.0 + i as f32 * (87.0 + 88.0) / 20000.0;
            let mut o = [0f32; 8];
            // SAFETY: AVX2+FMA checked above; `o` holds 8 floats.
            unsafe { std::arch::x86_64::_mm256_storeu_ps(o.as_mut_ptr(), avx2::exp_ps(std::arch::x86_64::_mm256_set1_ps(x))) };
            let want = (x as f64).exp();
            assert!(((o[0] as f64 - want) / want).abs() < 4e-7, "exp({x}) = {} vs {want}", o[0]);
        }
    }
}
