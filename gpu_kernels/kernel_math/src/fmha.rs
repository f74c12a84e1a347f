//! Paged context FMHA's per-lane math: the swizzled shared-memory layout of the Q/K/V tiles
//! and which row and 16-byte chunk each lane hands to `ldmatrix` so that the registers it
//! gets back are the `mma.sync.m16n8k16` fragments of `S = Q·Kᵀ` and `O += P·V`. The device
//! kernel (`kernels/src/context_attention.rs`) uses these functions for all its shared-memory
//! addressing; the tests emulate `ldmatrix` (plain and `.trans`) and `mma` with the PTX ISA's
//! layouts to prove the choreography computes both products.
//!
//! # Tiles
//!
//! A tile is `rows × head_dim` 16-bit elements, row-major, rows of `head_dim / 8` chunks of 16
//! bytes. Chunk `c` of row `r` is stored at chunk position [`swizzle`]`(r, c)` of its row, so
//! the 8 rows an `ldmatrix` phase reads (always 8 consecutive rows starting at a multiple of
//! 8, one chunk column) land in 8 different 16-byte bank groups, and so do the 8 chunks of a
//! row that 8 consecutive threads write with `cp.async`.
//!
//! A warp owns 16 query rows. Per 16-column k-step `ks` it loads its Q A fragment with one
//! `ldmatrix.x4` ([`q_lane_row_chunk`]); per pair of 8-key n-tiles and k-step, the K B fragments
//! with one `ldmatrix.x4` ([`k_lane_row_chunk`]); per 16-key k-step and pair of 8-column
//! n-tiles of the output, the V B fragments with one `ldmatrix.x4.trans`
//! ([`v_lane_row_chunk`]). The S accumulators become P·V's A fragments in place
//! (`kernel_math::attention::p_a`), and accumulator `(j, c)` of lane `(g, tq)` is output row
//! `g + 8 (c / 2)`, column `8 j + 2 tq + c % 2`.

/// Chunk position (16-byte unit within the row) where chunk `chunk` of row `row` is stored.
#[inline(always)]
pub const fn swizzle(row: usize, chunk: usize) -> usize {
    chunk ^ (row & 7)
}

/// Byte offset of chunk `chunk` of row `row` in a tile of `head_dim`-element rows.
#[inline(always)]
pub const fn tile_offset(row: usize, chunk: usize, head_dim: usize) -> usize {
    row * head_dim * 2 + swizzle(row, chunk) * 16
}

/// The (row, chunk) whose address lane `lane` gives `ldmatrix.x4` for the Q A fragment of
/// k-step `ks` of the warp's 16 rows (rows relative to the warp's first row).
#[inline(always)]
pub const fn q_lane_row_chunk(lane: usize, ks: usize) -> (usize, usize) {
    (lane % 16, 2 * ks + lane / 16)
}

/// The (key row, chunk) whose address lane `lane` gives `ldmatrix.x4` for the K B fragments
/// of n-tiles `2 np` and `2 np + 1` (8 keys each) at k-step `ks`; the four registers are
/// `[b0, b1]` of n-tile `2 np` and `[b0, b1]` of `2 np + 1`.
#[inline(always)]
pub const fn k_lane_row_chunk(lane: usize, np: usize, ks: usize) -> (usize, usize) {
    (16 * np + lane % 8 + 8 * (lane / 16), 2 * ks + (lane / 8) % 2)
}

/// The (key row, chunk) whose address lane `lane` gives `ldmatrix.x4.trans` for the V B
/// fragments of output n-tiles `2 jp` and `2 jp + 1` (8 columns each) at key k-step `kk`
/// (16 keys); the four registers are `[b0, b1]` of n-tile `2 jp` and `[b0, b1]` of `2 jp + 1`.
#[inline(always)]
pub const fn v_lane_row_chunk(lane: usize, kk: usize, jp: usize) -> (usize, usize) {
    (16 * kk + lane % 8 + 8 * ((lane / 8) % 2), 2 * jp + lane / 16)
}

/// The key (column of S, relative to the tile) of accumulator register `c` of S n-tile `nt`
/// in lane quad `tq`.
#[inline(always)]
pub const fn s_key(nt: usize, tq: usize, c: usize) -> usize {
    8 * nt + 2 * tq + c % 2
}

/// The output column of accumulator register `c` of O n-tile `j` in lane quad `tq`.
#[inline(always)]
pub const fn o_col(j: usize, tq: usize, c: usize) -> usize {
    8 * j + 2 * tq + c % 2
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::attention::p_a;
    use crate::codec::{bf16_bits_to_f32, f32_to_bf16_bits, pack_u16x2};
    use std::vec;
    use std::vec::Vec;

    /// A swizzled tile in "shared memory" (16-bit elements).
    fn store_tile(m: &[Vec<u16>], d: usize) -> Vec<u16> {
        let mut smem = vec![0u16; m.len() * d];
        for (r, row) in m.iter().enumerate() {
            for c in 0..d / 8 {
                let at = tile_offset(r, c, d) / 2;
                smem[at..at + 8].copy_from_slice(&row[8 * c..8 * c + 8]);
            }
        }
        smem
    }

    /// `ldmatrix.sync.aligned.m8n8.x4(.trans).b16`: lane `l` supplies the row address of
    /// matrix `l / 8`, row `l % 8`; register `i` of lane `l` gets matrix `i`'s elements
    /// `[l / 4][2 (l % 4) ..+2]` (plain) or `[2 (l % 4) ..+2][l / 4]` (`.trans`).
    fn ldmatrix(smem: &[u16], addr: impl Fn(usize) -> usize, trans: bool) -> [[u32; 4]; 32] {
        let mut out = [[0u32; 4]; 32];
        for (l, o) in out.iter_mut().enumerate() {
            for (i, reg) in o.iter_mut().enumerate() {
                let el = |row: usize, col: usize| smem[addr(8 * i + row) / 2 + col];
                *reg = if trans {
                    pack_u16x2(el(2 * (l % 4), l / 4), el(2 * (l % 4) + 1, l / 4))
                } else {
                    pack_u16x2(el(l / 4, 2 * (l % 4)), el(l / 4, 2 * (l % 4) + 1))
                };
            }
        }
        out
    }

    /// `mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32` with the PTX ISA fragment layouts.
    fn mma(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &mut [[f32; 4]; 32]) {
        let half = |w: u32, i: usize| bf16_bits_to_f32((w >> (16 * (i % 2))) as u16) as f64;
        let mut am = [[0f64; 16]; 16];
        let mut bm = [[0f64; 8]; 16];
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
                c[l][i] += (0..16).map(|k| am[r][k] * bm[k][n]).sum::<f64>() as f32;
            }
        }
    }

    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<Vec<u16>> {
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
    fn swizzle_is_a_permutation_and_phases_hit_distinct_bank_groups() {
        for d in [64usize, 128] {
            for r in 0..64 {
                let mut seen = vec![false; d / 8];
                for c in 0..d / 8 {
                    assert!(!seen[swizzle(r, c)]);
                    seen[swizzle(r, c)] = true;
                }
            }
            // ldmatrix phases: 8 lanes, 8 consecutive rows from a multiple of 8, one chunk.
            for l0 in [0usize, 8, 16, 24] {
                for (what, f) in [
                    ("q", &(|l| q_lane_row_chunk(l, 3)) as &dyn Fn(usize) -> (usize, usize)),
                    ("k", &|l| k_lane_row_chunk(l, 2, 1)),
                    ("v", &|l| v_lane_row_chunk(l, 1, 2)),
                ] {
                    let groups: Vec<usize> = (l0..l0 + 8).map(|l| (tile_offset(f(l).0, f(l).1, d) / 16) % 8).collect();
                    let mut sorted = groups.clone();
                    sorted.sort();
                    sorted.dedup();
                    assert_eq!(sorted.len(), 8, "{what} d {d} lanes {l0}..: {groups:?}");
                }
            }
        }
    }

    /// One warp's tile through emulated ldmatrix + mma against direct products:
    /// 16 query rows, 64 keys, `d` columns.
    fn check_tile(d: usize, seed: u64) {
        let q = matrix(16, d, seed);
        let k = matrix(64, d, seed ^ 0x55);
        let v = matrix(64, d, seed ^ 0xaa);
        let f = |m: &Vec<Vec<u16>>, r: usize, c: usize| bf16_bits_to_f32(m[r][c]) as f64;
        let (sq, sk, sv) = (store_tile(&q, d), store_tile(&k, d), store_tile(&v, d));
        let mut s = [[[0f32; 4]; 32]; 8];
        for ks in 0..d / 16 {
            let qa = ldmatrix(&sq, |l| tile_offset(q_lane_row_chunk(l, ks).0, q_lane_row_chunk(l, ks).1, d), false);
            for np in 0..4 {
                let kb = ldmatrix(&sk, |l| tile_offset(k_lane_row_chunk(l, np, ks).0, k_lane_row_chunk(l, np, ks).1, d), false);
                for half in 0..2 {
                    let b: [[u32; 2]; 32] = core::array::from_fn(|l| [kb[l][2 * half], kb[l][2 * half + 1]]);
                    mma(&qa, &b, &mut s[2 * np + half]);
                }
            }
        }
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for nt in 0..8 {
                for c in 0..4 {
                    let (row, key) = (g + 8 * (c / 2), s_key(nt, tq, c));
                    let want: f64 = (0..d).map(|x| f(&q, row, x) * f(&k, key, x)).sum();
                    let got = s[nt][l][c] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "S d {d} lane {l} nt {nt} c {c}: {got} vs {want}");
                }
            }
        }
        // P = an arbitrary function of (row, key) laid out like S, rounded to bf16.
        let p_of = |row: usize, key: usize| ((row * 7 + key * 3) % 11) as f32 / 11.0;
        let mut o = vec![[[0f32; 4]; 32]; d / 8];
        for kk in 0..4 {
            let pa: [[u32; 4]; 32] = core::array::from_fn(|l| {
                let (g, tq) = (l / 4, l % 4);
                let pt = |nt: usize| -> [f32; 4] { core::array::from_fn(|c| p_of(g + 8 * (c / 2), s_key(nt, tq, c))) };
                p_a(&pt(2 * kk), &pt(2 * kk + 1), pack_bf16)
            });
            for jp in 0..d / 16 {
                let vb = ldmatrix(&sv, |l| tile_offset(v_lane_row_chunk(l, kk, jp).0, v_lane_row_chunk(l, kk, jp).1, d), true);
                for half in 0..2 {
                    let b: [[u32; 2]; 32] = core::array::from_fn(|l| [vb[l][2 * half], vb[l][2 * half + 1]]);
                    mma(&pa, &b, &mut o[2 * jp + half]);
                }
            }
        }
        let p_round = |row: usize, key: usize| bf16_bits_to_f32(f32_to_bf16_bits(p_of(row, key))) as f64;
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for (j, oj) in o.iter().enumerate() {
                for c in 0..4 {
                    let (row, col) = (g + 8 * (c / 2), o_col(j, tq, c));
                    let want: f64 = (0..64).map(|key| p_round(row, key) * f(&v, key, col)).sum();
                    let got = oj[l][c] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "O d {d} lane {l} j {j} c {c}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn ldmatrix_choreography_computes_qk_and_pv_d64() {
        check_tile(64, 3);
        check_tile(64, 0xfeed_f00d);
    }

    #[test]
    fn ldmatrix_choreography_computes_qk_and_pv_d128() {
        check_tile(128, 11);
        check_tile(128, 0x0123_4567_89ab);
    }
}
