//! The GEMM kernels' per-lane index math: the shared-memory swizzle of the tiled paths, which
//! row each lane hands to `ldmatrix`, how the fused gate/up kernels interleave gate and up
//! weight rows, and how the skinny path builds tensor-core fragments from whole 16-byte
//! loads. The device kernels (`kernels/src/gemm.rs`) use these functions; the tests emulate
//! `ldmatrix` and `mma.sync.m16n8k16` with the PTX ISA's fragment layouts.
//!
//! Lane `l` is `g = l / 4` ("groupID") and `tq = l % 4` ("threadID_in_group"). Fragment
//! layouts of `m16n8k16` (16-bit operands, two per 32-bit register):
//! - A (row-major 16 × 16): `a0 = A[g][2tq..]`, `a1 = A[g+8][2tq..]`, `a2 = A[g][2tq+8..]`,
//!   `a3 = A[g+8][2tq+8..]`;
//! - B (16 × 8, "col"): `b0 = B[2tq..][g]`, `b1 = B[2tq+8..][g]`;
//! - C/D (16 × 8, f32): `c0 = C[g][2tq]`, `c1 = C[g][2tq+1]`, `c2 = C[g+8][2tq]`,
//!   `c3 = C[g+8][2tq+1]` ([`acc_row`], [`acc_col`]).

/// Bytes per shared-memory row of a tiled stage (32 16-bit elements of `k`).
pub const ROW_BYTES: usize = 64;
/// 16-byte chunks per shared-memory row.
pub const ROW_CHUNKS: usize = ROW_BYTES / 16;

/// The physical 16-byte chunk of logical chunk `chunk` in shared-memory row `row`: XOR with
/// bits 1..3 of the row, so that the 8 rows one `ldmatrix` phase reads (same logical chunk)
/// and the 8 chunks one `cp.async` phase writes fall in 8 different 16-byte bank groups.
#[inline(always)]
pub const fn swizzle(row: usize, chunk: usize) -> usize {
    chunk ^ ((row >> 1) & 3)
}

/// Byte offset of (row, logical chunk) inside a stage.
#[inline(always)]
pub const fn smem_offset(row: usize, chunk: usize) -> usize {
    row * ROW_BYTES + swizzle(row, chunk) * 16
}

/// The (row within the 16-row tile, k chunk 0/1) whose address lane `lane` gives to
/// `ldmatrix.x4` for an A fragment: matrices 0..4 are (rows 0-7, k 0-7), (rows 8-15, k 0-7),
/// (rows 0-7, k 8-15), (rows 8-15, k 8-15), i.e. registers `a0..a3`.
#[inline(always)]
pub const fn ldsm_a_lane(lane: usize) -> (usize, usize) {
    (lane % 8 + ((lane / 8) & 1) * 8, lane / 16)
}

/// The (weight row within 16, k chunk 0/1) lane `lane` gives to `ldmatrix.x4` for the B
/// fragments of two 8-column N tiles: registers `[b0, b1]` of tile 0, then of tile 1.
#[inline(always)]
pub const fn ldsm_b_lane(lane: usize) -> (usize, usize) {
    (lane % 8 + (lane / 16) * 8, (lane / 8) & 1)
}

/// Row of accumulator register `c` (0..4) within the 16-row tile.
#[inline(always)]
pub const fn acc_row(g: usize, c: usize) -> usize {
    g + 8 * (c / 2)
}

/// Column of accumulator register `c` within the 8-column tile.
#[inline(always)]
pub const fn acc_col(tq: usize, c: usize) -> usize {
    2 * tq + c % 2
}

/// Fused gate/up, tiled paths: the weight row loaded into shared-memory row `r` (0..128) of a
/// CTA whose output columns start at `col0`, and whether it exists. Each warp column `wn`
/// (32 rows) holds gate rows for its 16 output columns, then the matching up rows, so the
/// warp's N tiles 0, 1 (gate) and 2, 3 (up) pair up register by register.
#[inline(always)]
pub const fn gate_up_row(r: usize, col0: usize, inter: usize) -> (usize, bool) {
    let col = col0 + (r / 32) * 16 + r % 16;
    let up = (r % 32) >= 16;
    (col + if up { inter } else { 0 }, col < inter)
}

/// Output column (relative to the CTA's first) of N tile `ni` (0, 1) of warp column `wn` in
/// the fused tiled kernels.
#[inline(always)]
pub const fn gate_up_col(wn: usize, ni: usize, tq: usize, c: usize) -> usize {
    wn * 16 + ni * 8 + acc_col(tq, c)
}

/// CTAs per group of N tiles in the tiled paths' launch order: consecutive CTAs walk down
/// the M tiles of [`RASTER_GROUP`] adjacent N tiles, so the weight rows a wave reads stay
/// few (and in L2) instead of every CTA row sweeping all of `w`.
pub const RASTER_GROUP: usize = 8;

/// The (M tile, N tile) of linear CTA index `id` (`id < tiles_m × tiles_n`): groups of
/// [`RASTER_GROUP`] N tiles (the last may be narrower), M-major inside a group.
#[inline(always)]
pub const fn tile_of(id: usize, tiles_m: usize, tiles_n: usize) -> (usize, usize) {
    let per_group = RASTER_GROUP * tiles_m;
    let (group, rem) = (id / per_group, id % per_group);
    let first_n = group * RASTER_GROUP;
    let width = if tiles_n - first_n < RASTER_GROUP { tiles_n - first_n } else { RASTER_GROUP };
    (rem / width, first_n + rem % width)
}

/// Skinny path: `k` offset (within a 32-wide step) of the 16-byte chunk lane quad `tq` loads
/// from its weight rows and token rows.
#[inline(always)]
pub const fn skinny_k(tq: usize) -> usize {
    8 * tq
}

/// Skinny path: the A fragment of half-step `j` (0, 1) from the 16-byte chunks of weight
/// rows `g` (`lo`) and `g + 8` (`hi`). The dot product's `k` order is permuted the same way
/// for A and B ([`skinny_b`]), so the product is unchanged.
#[inline(always)]
pub const fn skinny_a(lo: &[u32; 4], hi: &[u32; 4], j: usize) -> [u32; 4] {
    [lo[2 * j], hi[2 * j], lo[2 * j + 1], hi[2 * j + 1]]
}

/// Skinny path: the B fragment of half-step `j` from the 16-byte chunk of token row `g`.
#[inline(always)]
pub const fn skinny_b(x: &[u32; 4], j: usize) -> [u32; 2] {
    [x[2 * j], x[2 * j + 1]]
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// Two small integers packed like two 16-bit elements (exact in f64).
    fn pack(lo: i32, hi: i32) -> u32 {
        (lo as u16 as u32) | ((hi as u16 as u32) << 16)
    }
    fn unpack(w: u32) -> [f64; 2] {
        [(w as u16) as i16 as f64, ((w >> 16) as u16) as i16 as f64]
    }

    /// `D = A·B + C` per the PTX fragment layouts: `a[lane]`, `b[lane]`, `c[lane]`.
    fn mma(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &mut [[f64; 4]; 32]) {
        let mut am = [[0f64; 16]; 16];
        let mut bm = [[0f64; 8]; 16];
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for (r, (row, col)) in [(g, 2 * tq), (g + 8, 2 * tq), (g, 2 * tq + 8), (g + 8, 2 * tq + 8)].into_iter().enumerate() {
                let [x, y] = unpack(a[l][r]);
                am[row][col] = x;
                am[row][col + 1] = y;
            }
            for (r, krow) in [2 * tq, 2 * tq + 8].into_iter().enumerate() {
                let [x, y] = unpack(b[l][r]);
                bm[krow][g] = x;
                bm[krow + 1][g] = y;
            }
        }
        for l in 0..32 {
            let (g, tq) = (l / 4, l % 4);
            for cr in 0..4 {
                let (i, j) = (acc_row(g, cr), acc_col(tq, cr));
                c[l][cr] += (0..16).map(|k| am[i][k] * bm[k][j]).sum::<f64>();
            }
        }
    }

    /// `ldmatrix.x4`: lane `l` supplies `rows[l]` (8 elements); register `j` of lane `l` is
    /// row `l / 4` of matrix `j`, elements `2 (l % 4) ..`.
    fn ldmatrix(rows: &[[i32; 8]; 32]) -> [[u32; 4]; 32] {
        let mut out = [[0u32; 4]; 32];
        for l in 0..32 {
            for j in 0..4 {
                let row = rows[8 * j + l / 4];
                out[l][j] = pack(row[2 * (l % 4)], row[2 * (l % 4) + 1]);
            }
        }
        out
    }

    #[test]
    fn swizzle_is_a_permutation_without_bank_conflicts() {
        for row in 0..128 {
            let mut seen = [false; ROW_CHUNKS];
            for c in 0..ROW_CHUNKS {
                seen[swizzle(row, c)] = true;
            }
            assert!(seen.iter().all(|s| *s));
        }
        // ldmatrix: 8 consecutive rows (from any multiple of 8), one logical chunk.
        for r0 in (0..128).step_by(8) {
            for c in 0..ROW_CHUNKS {
                let mut groups: Vec<usize> = (r0..r0 + 8).map(|r| smem_offset(r, c) / 16 % 8).collect();
                groups.sort();
                groups.dedup();
                assert_eq!(groups.len(), 8, "ldmatrix rows {r0}.. chunk {c}");
            }
        }
        // cp.async: 8 consecutive chunk ids q (row q / 4, chunk q % 4).
        for q0 in (0..512).step_by(8) {
            let mut groups: Vec<usize> = (q0..q0 + 8).map(|q| smem_offset(q / 4, q % 4) / 16 % 8).collect();
            groups.sort();
            groups.dedup();
            assert_eq!(groups.len(), 8, "cp.async chunks {q0}..");
        }
    }

    /// The tiled path's fragments (ldmatrix from the lane addresses above) multiply to
    /// `A · Wᵀ` for a 16 × 16 A tile and 16 weight rows (two N tiles).
    #[test]
    fn ldmatrix_lanes_give_mma_fragments() {
        let a_tile: Vec<[i32; 16]> = (0..16).map(|i| core::array::from_fn(|k| ((i * 7 + k * 3) % 11) as i32 - 5)).collect();
        let w_tile: Vec<[i32; 16]> = (0..16).map(|n| core::array::from_fn(|k| ((n * 5 + k * 13) % 9) as i32 - 4)).collect();
        let rows_a: [[i32; 8]; 32] = core::array::from_fn(|l| {
            let (r, kc) = ldsm_a_lane(l);
            core::array::from_fn(|e| a_tile[r][8 * kc + e])
        });
        let rows_b: [[i32; 8]; 32] = core::array::from_fn(|l| {
            let (r, kc) = ldsm_b_lane(l);
            core::array::from_fn(|e| w_tile[r][8 * kc + e])
        });
        let a = ldmatrix(&rows_a);
        let b = ldmatrix(&rows_b);
        for nt in 0..2 {
            let bf: [[u32; 2]; 32] = core::array::from_fn(|l| [b[l][2 * nt], b[l][2 * nt + 1]]);
            let mut c = [[0f64; 4]; 32];
            mma(&a, &bf, &mut c);
            for l in 0..32 {
                for cr in 0..4 {
                    let (i, j) = (acc_row(l / 4, cr), 8 * nt + acc_col(l % 4, cr));
                    let want: i32 = (0..16).map(|k| a_tile[i][k] * w_tile[j][k]).sum();
                    assert_eq!(c[l][cr], want as f64, "nt {nt} lane {l} reg {cr}");
                }
            }
        }
    }

    /// The skinny path: 16 weight rows × 8 tokens over 32 `k`, fragments from one 16-byte
    /// chunk per (lane, row), gives `W · Xᵀ`.
    #[test]
    fn skinny_fragments_multiply_w_by_x() {
        let w: Vec<[i32; 32]> = (0..16).map(|n| core::array::from_fn(|k| ((n * 3 + k * 7) % 13) as i32 - 6)).collect();
        let x: Vec<[i32; 32]> = (0..8).map(|t| core::array::from_fn(|k| ((t * 11 + k * 5) % 7) as i32 - 3)).collect();
        let chunk = |row: &[i32; 32], tq: usize| -> [u32; 4] {
            let k0 = skinny_k(tq);
            core::array::from_fn(|i| pack(row[k0 + 2 * i], row[k0 + 2 * i + 1]))
        };
        let mut c = [[0f64; 4]; 32];
        for j in 0..2 {
            let a: [[u32; 4]; 32] = core::array::from_fn(|l| skinny_a(&chunk(&w[l / 4], l % 4), &chunk(&w[l / 4 + 8], l % 4), j));
            let b: [[u32; 2]; 32] = core::array::from_fn(|l| skinny_b(&chunk(&x[l / 4], l % 4), j));
            mma(&a, &b, &mut c);
        }
        for l in 0..32 {
            for cr in 0..4 {
                let (row, tok) = (acc_row(l / 4, cr), acc_col(l % 4, cr));
                let want: i32 = (0..32).map(|k| w[row][k] * x[tok][k]).sum();
                assert_eq!(c[l][cr], want as f64);
            }
        }
    }

    #[test]
    fn raster_order_visits_every_tile_once() {
        for (tm, tn) in [(1usize, 1usize), (3, 7), (32, 224), (5, 8), (2, 17)] {
            let mut seen = std::vec![false; tm * tn];
            for id in 0..tm * tn {
                let (m, n) = tile_of(id, tm, tn);
                assert!(m < tm && n < tn, "{id} -> ({m}, {n})");
                assert!(!seen[m * tn + n]);
                seen[m * tn + n] = true;
            }
        }
    }

    #[test]
    fn gate_up_rows_pair_gate_with_up() {
        let inter = 200;
        for col0 in [0, 64, 192] {
            for r in 0..128 {
                let (row, valid) = gate_up_row(r, col0, inter);
                let partner = if r % 32 < 16 { r + 16 } else { r - 16 };
                let (prow, pvalid) = gate_up_row(partner, col0, inter);
                assert_eq!(valid, pvalid);
                assert_eq!(row.abs_diff(prow), inter);
                assert_eq!(valid, (row % inter) < inter && col0 + (r / 32) * 16 + r % 16 < inter);
            }
        }
        // Warp column wn, N tile ni covers smem rows 32 wn + 8 ni ..: the output columns of
        // gate_up_col match the rows' columns.
        for wn in 0..4 {
            for ni in 0..2 {
                for tq in 0..4 {
                    for cr in 0..4 {
                        let r = 32 * wn + 8 * ni + acc_col(tq, cr);
                        assert_eq!(gate_up_row(r, 0, 10_000).0, gate_up_col(wn, ni, tq, cr));
                    }
                }
            }
        }
    }
}
