//! Decode attention's per-lane math: which K/V/Q elements each lane loads into which
//! tensor-core fragment register, and the base-2 online softmax with the merge of partial
//! (max, sum, accumulator) results. The device kernel (`kernels/src/attention.rs`) uses these
//! functions for its addressing and register assembly; the tests below emulate
//! `mma.sync.m16n8k16` with the PTX ISA's fragment layouts to prove the choreography computes
//! `Q·Kᵀ` and `P·V`.
//!
//! # The warp's tile (16 tokens)
//!
//! A warp owns one M tile of 16 query heads (rows; rows past the group are zero) and walks
//! its tokens 16 at a time:
//! - `S = Q · Kᵀ` as two `m16n8k16` products per 16 columns of `head_dim` (N = 8 tokens each);
//! - `O += P · V` as `head_dim / 8` products (K = the 16 tokens, N = 8 output columns each).
//!
//! A dot product does not care in which order its terms are summed, so the kernel permutes
//! the `k` dimension of both products (and the `n` dimension of `P·V`, undone when the output
//! is stored) so that every lane's operands come from whole 16-byte loads:
//! - QK: in step `ss` of 32 columns, lane quad `tq` loads columns `32 ss + 8 tq .. + 8` of
//!   its Q rows and K token; its four words feed two k-steps ([`qk_a`], [`qk_b`]);
//! - tokens: logical token `k` of the tile is physical token [`token_of`]`(k)`, chosen so that
//!   lane quad `tq` holds tokens `4 tq .. 4 tq + 4` as P·V's B operand ([`v_token`]) and
//!   lane group `g` supplies K rows [`k_token`]`(g, 0/1)`;
//! - PV: lane group `g` loads V columns `64 h + 8 g .. + 8` of its four tokens and repacks
//!   pairs of tokens per column ([`pv_b`]); accumulator `(j, e)` of lane quad `tq` is output
//!   column [`o_col`]`(j, tq, e)`: every lane ends up holding runs of 8 consecutive columns.
//!
//! Lane `l` is `g = l / 4` ("groupID") and `tq = l % 4` ("threadID_in_group").

/// Tokens per tile.
pub const TILE: usize = 16;

/// Physical token (0..16, within the tile) of logical token `k` of the P·V product (= column
/// `k % 8` of QK n-tile `k / 8`).
#[inline(always)]
pub const fn token_of(k: usize) -> usize {
    let (nt, n) = (k / 8, k % 8);
    4 * (n / 2) + 2 * nt + n % 2
}

/// The tile token whose K row lane group `g` loads for QK n-tile `nt` (its B column `g`).
#[inline(always)]
pub const fn k_token(g: usize, nt: usize) -> usize {
    token_of(8 * nt + g)
}

/// The tile token of score register `c` (0..4: `c0, c1` row `g`, `c2, c3` row `g + 8`) of QK
/// n-tile `nt` in lane quad `tq`.
#[inline(always)]
pub const fn score_token(tq: usize, nt: usize, c: usize) -> usize {
    token_of(8 * nt + 2 * tq + c % 2)
}

/// First `head_dim` column of the 8 that lane quad `tq` loads from its Q rows and K token in
/// step `ss` (32 columns per step).
#[inline(always)]
pub const fn qk_chunk_col(ss: usize, tq: usize) -> usize {
    32 * ss + 8 * tq
}

/// QK A fragment (Q, rows = heads) of k-step `2 ss + s` from the words of the 16-byte chunks
/// of row `g` (`rg`) and row `g + 8` (`rg8`) loaded in step `ss`.
#[inline(always)]
pub const fn qk_a(rg: &[u32; 4], rg8: &[u32; 4], s: usize) -> [u32; 4] {
    [rg[2 * s], rg8[2 * s], rg[2 * s + 1], rg8[2 * s + 1]]
}

/// QK B fragment (Kᵀ, columns = tokens) of k-step `2 ss + s` from the chunk of the lane's K
/// row loaded in step `ss`.
#[inline(always)]
pub const fn qk_b(chunk: &[u32; 4], s: usize) -> [u32; 2] {
    [chunk[2 * s], chunk[2 * s + 1]]
}

/// The tile token of V chunk `i` (0..4) of lane quad `tq`.
#[inline(always)]
pub const fn v_token(tq: usize, i: usize) -> usize {
    4 * tq + i
}

/// First `head_dim` column of the 8 that lane group `g` loads from each of its V tokens for
/// half `h` (64 columns per half).
#[inline(always)]
pub const fn v_chunk_col(h: usize, g: usize) -> usize {
    64 * h + 8 * g
}

/// Two 16-bit halves (`lo` from `a`, `hi` from `b`) selected by `upper`: the low or the high
/// half of each word.
#[inline(always)]
pub const fn pair(a: u32, b: u32, upper: bool) -> u32 {
    if upper { (a >> 16) | (b & 0xffff_0000) } else { (a & 0xffff) | (b << 16) }
}

/// P·V B fragment (V, k = tokens, n = columns) of n-tile `8 h + jj` from the lane's four V
/// chunks of half `h` (`v[i]` = token [`v_token`]`(tq, i)`).
#[inline(always)]
pub const fn pv_b(v: &[[u32; 4]; 4], jj: usize) -> [u32; 2] {
    let (w, upper) = (jj / 2, jj % 2 == 1);
    [pair(v[0][w], v[1][w], upper), pair(v[2][w], v[3][w], upper)]
}

/// P·V A fragment from the probabilities of QK n-tiles 0 and 1 (`p0`, `p1`, register order
/// `c0..c3`), each pair packed to 16-bit by `pack(lo, hi)`.
#[inline(always)]
pub fn p_a(p0: &[f32; 4], p1: &[f32; 4], pack: impl Fn(f32, f32) -> u32) -> [u32; 4] {
    [pack(p0[0], p0[1]), pack(p0[2], p0[3]), pack(p1[0], p1[1]), pack(p1[2], p1[3])]
}

/// Output column of accumulator register `e` (0, 1; the same for rows `g` and `g + 8`) of
/// P·V n-tile `j` in lane quad `tq`. For fixed `(j / 8, e)` the eight `j % 8` are consecutive.
#[inline(always)]
pub const fn o_col(j: usize, tq: usize, e: usize) -> usize {
    64 * (j / 8) + 16 * tq + 8 * e + j % 8
}

/// One step of the base-2 online softmax: given the running maximum `m_old` and a tile's
/// maximum, returns `(m_new, base, alpha)`: the new running maximum, the value to subtract
/// before `exp2` (`m_new`, or 0 while everything is masked, so that `exp2(-inf - base) = 0`
/// and never `NaN`), and the factor `exp2(m_old - base)` that rescales the running sum and
/// accumulator (0 from the empty state).
#[inline(always)]
pub fn online_step(m_old: f32, tile_max: f32, exp2: impl Fn(f32) -> f32) -> (f32, f32, f32) {
    let m_new = if tile_max > m_old { tile_max } else { m_old };
    let base = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
    (m_new, base, exp2(m_old - base))
}

/// The weight of a partial result with running maximum `m` in a merge whose overall maximum is
/// `m_total`: `exp2(m - m_total)`, exactly 0 for an empty partial (`m = -inf`) so that its
/// (possibly unwritten) accumulator is ignored.
#[inline(always)]
pub fn partial_weight(m: f32, m_total: f32, exp2: impl Fn(f32) -> f32) -> f32 {
    if m == f32::NEG_INFINITY { 0.0 } else { exp2(m - m_total) }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::codec::{bf16_bits_to_f32, f32_to_bf16_bits, pack_u16x2};
    use proptest::prelude::*;
    use std::vec::Vec;

    /// `D = A·B + C` for one warp with the PTX ISA fragment layouts of
    /// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`:
    /// A: `a[i]` (i = 0..8, two per register, low half first) at row `g + 8 * ((i / 2) % 2)`,
    /// column `2 tq + i % 2 + 8 * (i / 4)`; B: `b[i]` (0..4) at row (k) `2 tq + i % 2 + 8 * (i / 2)`,
    /// column `g`; C/D: `c[i]` at row `g + 8 * (i / 2)`, column `2 tq + i % 2`.
    fn mma(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &mut [[f32; 4]; 32]) {
        let half = |w: u32, i: usize| bf16_bits_to_f32((w >> (16 * (i % 2))) as u16);
        let mut am = [[0f32; 16]; 16];
        let mut bm = [[0f32; 8]; 16];
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for i in 0..8 {
                am[g + 8 * ((i / 2) % 2)][2 * tq + i % 2 + 8 * (i / 4)] = half(a[l][i / 2], i);
            }
            for i in 0..4 {
                bm[2 * tq + i % 2 + 8 * (i / 2)][g] = half(b[l][i / 2], i);
            }
        }
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for i in 0..4 {
                let (r, n) = (g + 8 * (i / 2), 2 * tq + i % 2);
                let dot: f64 = (0..16).map(|k| am[r][k] as f64 * bm[k][n] as f64).sum();
                c[l][i] += dot as f32;
            }
        }
    }

    /// The eight bf16 elements `row[col .. col + 8]` as four packed words.
    fn chunk(row: &[u16], col: usize) -> [u32; 4] {
        core::array::from_fn(|w| pack_u16x2(row[col + 2 * w], row[col + 2 * w + 1]))
    }

    fn bf16_matrix(rows: usize, cols: usize, seed: u64) -> Vec<Vec<u16>> {
        let mut s = seed | 1;
        (0..rows)
            .map(|_| {
                (0..cols)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        f32_to_bf16_bits(((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
                    })
                    .collect()
            })
            .collect()
    }

    fn pack_bf16(lo: f32, hi: f32) -> u32 {
        pack_u16x2(f32_to_bf16_bits(lo), f32_to_bf16_bits(hi))
    }

    #[test]
    fn token_permutation_is_a_bijection_matching_both_products() {
        let mut seen = [false; TILE];
        for k in 0..TILE {
            assert!(!seen[token_of(k)]);
            seen[token_of(k)] = true;
        }
        for tq in 0..4 {
            // P·V's B rows 2tq, 2tq+1, 2tq+8, 2tq+9 are the lane's V tokens 0..4.
            assert_eq!([token_of(2 * tq), token_of(2 * tq + 1), token_of(2 * tq + 8), token_of(2 * tq + 9)], core::array::from_fn(|i| v_token(tq, i)));
        }
        for d in [64usize, 128] {
            let mut cols = Vec::new();
            for j in 0..d / 8 {
                for tq in 0..4 {
                    for e in 0..2 {
                        cols.push(o_col(j, tq, e));
                    }
                }
            }
            cols.sort();
            assert_eq!(cols, (0..d).collect::<Vec<_>>(), "every output column exactly once");
        }
    }

    /// Runs the warp's per-lane choreography for one tile through the emulated `mma` and
    /// compares with direct products.
    fn check_tile(d: usize, seed: u64) {
        let q = bf16_matrix(16, d, seed);
        let k = bf16_matrix(16, d, seed ^ 0x55);
        let v = bf16_matrix(16, d, seed ^ 0xaa);
        let f = |m: &Vec<Vec<u16>>, r: usize, c: usize| bf16_bits_to_f32(m[r][c]) as f64;

        // S = Q Kᵀ, k-step by k-step.
        let mut s = [[[0f32; 4]; 32]; 2];
        for ss in 0..d / 32 {
            for sh in 0..2 {
                let mut a = [[0u32; 4]; 32];
                let mut b = [[[0u32; 2]; 32]; 2];
                for l in 0..32 {
                    let (g, tq) = (l / 4, l % 4);
                    let col = qk_chunk_col(ss, tq);
                    a[l] = qk_a(&chunk(&q[g], col), &chunk(&q[g + 8], col), sh);
                    for nt in 0..2 {
                        b[nt][l] = qk_b(&chunk(&k[k_token(g, nt)], col), sh);
                    }
                }
                for nt in 0..2 {
                    mma(&a, &b[nt], &mut s[nt]);
                }
            }
        }
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for nt in 0..2 {
                for c in 0..4 {
                    let (row, tok) = (g + 8 * (c / 2), score_token(tq, nt, c));
                    let want: f64 = (0..d).map(|x| f(&q, row, x) * f(&k, tok, x)).sum();
                    let got = s[nt][l][c] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "d {d} lane {l} nt {nt} c {c}: {got} vs {want}");
                }
            }
        }

        // O = P V with P an arbitrary function of (row, token), rounded to bf16 as the kernel does.
        let p_of = |row: usize, tok: usize| ((row * 7 + tok * 3) % 11) as f32 / 11.0;
        let p_round = |row: usize, tok: usize| bf16_bits_to_f32(f32_to_bf16_bits(p_of(row, tok))) as f64;
        let mut a = [[0u32; 4]; 32];
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            let pv = |nt: usize| -> [f32; 4] { core::array::from_fn(|c| p_of(g + 8 * (c / 2), score_token(tq, nt, c))) };
            a[l] = p_a(&pv(0), &pv(1), pack_bf16);
        }
        let mut o = std::vec![[[0f32; 4]; 32]; d / 8];
        for j in 0..d / 8 {
            let (h, jj) = (j / 8, j % 8);
            let mut b = [[0u32; 2]; 32];
            for l in 0..32 {
                let (g, tq) = (l / 4, l % 4);
                let vw: [[u32; 4]; 4] = core::array::from_fn(|i| chunk(&v[v_token(tq, i)], v_chunk_col(h, g)));
                b[l] = pv_b(&vw, jj);
            }
            mma(&a, &b, &mut o[j]);
        }
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for (j, oj) in o.iter().enumerate() {
                for c in 0..4 {
                    let (row, col) = (g + 8 * (c / 2), o_col(j, tq, c % 2));
                    let want: f64 = (0..TILE).map(|t| p_round(row, t) * f(&v, t, col)).sum();
                    let got = oj[l][c] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "d {d} lane {l} j {j} c {c}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn fragment_choreography_computes_qk_and_pv_d64() {
        check_tile(64, 1);
        check_tile(64, 0xdead_beef);
    }

    #[test]
    fn fragment_choreography_computes_qk_and_pv_d128() {
        check_tile(128, 7);
        check_tile(128, 0x1234_5678_9abc);
    }

    /// The kernel's whole softmax pipeline on the CPU: tiles of 16 with [`online_step`],
    /// splits (and warps) merged with [`partial_weight`], against a direct f64 computation.
    fn flash_decode(scores: &[f32], values: &[f32], tiles_per_split: usize) -> f32 {
        let exp2 = |x: f32| x.exp2();
        let mut parts = Vec::new();
        for split in scores.chunks(TILE * tiles_per_split).zip(values.chunks(TILE * tiles_per_split)) {
            let (mut m, mut l, mut acc) = (f32::NEG_INFINITY, 0f32, 0f32);
            for (xs, vs) in split.0.chunks(TILE).zip(split.1.chunks(TILE)) {
                let tmax = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let (m_new, base, alpha) = online_step(m, tmax, exp2);
                l *= alpha;
                acc *= alpha;
                for (&x, &v) in xs.iter().zip(vs) {
                    let p = exp2(x - base);
                    l += p;
                    acc += p * v;
                }
                m = m_new;
            }
            parts.push((m, l, acc));
        }
        // An empty partial (all masked) must not disturb the merge.
        parts.push((f32::NEG_INFINITY, 0.0, f32::NAN));
        let m_total = parts.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
        let (mut l, mut acc) = (0f32, 0f32);
        for &(m, ls, a) in &parts {
            let w = partial_weight(m, m_total, exp2);
            if w != 0.0 {
                l += w * ls;
                acc += w * a;
            }
        }
        if l > 0.0 { acc / l } else { 0.0 }
    }

    proptest! {
        #[test]
        fn online_softmax_with_merges_matches_direct(
            xs in proptest::collection::vec(-60f32..60.0, 1..400),
            masked_frac in 0.0f64..0.5,
            tiles_per_split in 1usize..6,
        ) {
            // Some scores masked (-inf), as the kernel masks invalid tokens; never the first,
            // so a row always has a valid token (an all-masked row has no reference value).
            let n = xs.len();
            let scores: Vec<f32> = xs.iter().enumerate().map(|(i, &x)| if (i as f64) < masked_frac * n as f64 && i % 3 == 1 { f32::NEG_INFINITY } else { x }).collect();
            let values: Vec<f32> = (0..n).map(|i| ((i * 37 % 19) as f32 - 9.0) / 3.0).collect();
            let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let (mut num, mut den) = (0f64, 0f64);
            for (&x, &v) in scores.iter().zip(&values) {
                let w = (x as f64 - max).exp2();
                num += w * v as f64;
                den += w;
            }
            let want = num / den;
            let got = flash_decode(&scores, &values, tiles_per_split) as f64;
            prop_assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{} vs {}", got, want);
        }
    }

    #[test]
    fn fully_masked_input_gives_zero_weights_and_no_nan() {
        let exp2 = |x: f32| x.exp2();
        let (m, base, alpha) = online_step(f32::NEG_INFINITY, f32::NEG_INFINITY, exp2);
        assert_eq!((m, base, alpha), (f32::NEG_INFINITY, 0.0, 0.0));
        assert_eq!((f32::NEG_INFINITY - base).exp2(), 0.0);
        assert_eq!(partial_weight(f32::NEG_INFINITY, f32::NEG_INFINITY, exp2), 0.0);
        assert_eq!(flash_decode(&[f32::NEG_INFINITY; 40], &[1.0; 40], 1), 0.0);
        // From the empty state, the first real tile rescales by exactly 0 and starts at 1.
        let (m, base, alpha) = online_step(f32::NEG_INFINITY, 3.5, exp2);
        assert_eq!((m, base, alpha), (3.5, 3.5, 0.0));
    }
}
