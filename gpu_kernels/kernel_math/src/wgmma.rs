//! Index math of the sm_90a warpgroup-MMA GEMM (`kernels/src/gemm_wgmma.rs`): the 128-byte
//! swizzled shared-memory layout its `cp.async` copies write, the matrix descriptors its
//! `wgmma.mma_async` reads that layout through, and where each accumulator register lands.
//!
//! The tests emulate the tensor cores' side as the PTX ISA documents it (a K-major operand
//! in 8-row groups `stride` bytes apart, rows of 128 bytes, the 128-byte swizzle XOR-ing
//! address bits 4–6 with bits 7–9) and check that every element the copies stored is the
//! one each `k` step of 16 reads.

/// Bytes per swizzled row: 64 16-bit elements of `k`.
pub const ROW_BYTES: usize = 128;
/// Bytes between 8-row groups (the swizzle's period).
pub const GROUP_BYTES: usize = 8 * ROW_BYTES;

/// Byte offset of 16-byte chunk `c` (0..8) of row `r` of a swizzled operand tile whose base
/// lies on a [`GROUP_BYTES`] boundary: chunk `c ^ (r % 8)` of the row.
#[inline(always)]
pub const fn sw128_offset(r: usize, c: usize) -> usize {
    r * ROW_BYTES + ((c ^ (r % 8)) * 16)
}

/// The matrix descriptor of a K-major swizzled operand starting at shared address `addr`
/// (bits 0–13: address / 16; 16–29: leading offset 16 bytes, unused by this layout;
/// 32–45: [`GROUP_BYTES`] / 16 between 8-row groups; 49–51: base offset 0; 62–63: 1, the
/// 128-byte swizzle).
#[inline(always)]
pub const fn sw128_desc(addr: u32) -> u64 {
    ((addr as u64 & 0x3_ffff) >> 4) | (1 << 16) | (((GROUP_BYTES as u64) >> 4) << 32) | (1 << 62)
}

/// The (row, column) of accumulator register `i` (0..N/2) of lane `lane` of warp `warp`
/// (0..4) of a warpgroup, for an `m64nNk16` product with f32 accumulators.
#[inline(always)]
pub const fn acc_pos(warp: usize, lane: usize, i: usize) -> (usize, usize) {
    let (j, h, c) = (i / 4, (i / 2) % 2, i % 2);
    (16 * warp + lane / 4 + 8 * h, 8 * j + 2 * (lane % 4) + c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared address the tensor cores read for element (row `r`, `k` within a step of
    /// 16) of an operand described by `desc` (K-major, 128-byte swizzle).
    fn emulated_read(desc: u64, r: usize, k: usize) -> usize {
        assert_eq!(desc >> 62, 1, "128-byte swizzle");
        assert_eq!((desc >> 49) & 7, 0, "base offset");
        let start = ((desc & 0x3fff) << 4) as usize;
        let stride = (((desc >> 32) & 0x3fff) << 4) as usize;
        let logical = start + (r / 8) * stride + (r % 8) * ROW_BYTES + 2 * k;
        logical ^ (((logical >> 7) & 7) << 4)
    }

    #[test]
    fn every_k_step_reads_what_the_copies_wrote() {
        // Stage bases as the kernel places them: 1024-aligned, warpgroup halves 8 KiB apart.
        for base in [0usize, 1024, 33 * 1024, 5 * 32 * 1024 + 8192] {
            // Where the copies put element (r, kk): chunk kk / 8 of row r, element kk % 8.
            let stored = |r: usize, kk: usize| base + sw128_offset(r, kk / 8) + 2 * (kk % 8);
            for step in 0..4 {
                let desc = sw128_desc((base + 32 * step) as u32);
                for r in 0..128 {
                    for k in 0..16 {
                        assert_eq!(emulated_read(desc, r, k), stored(r, 16 * step + k), "base {base} step {step} row {r} k {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn copies_cover_the_tile_once() {
        let mut seen = [false; 128 * 8];
        for r in 0..128 {
            for c in 0..8 {
                let o = sw128_offset(r, c);
                assert_eq!(o % 16, 0);
                assert!(!seen[o / 16], "row {r} chunk {c}");
                seen[o / 16] = true;
            }
        }
    }

    #[test]
    fn accumulators_cover_the_warpgroup_tile_once() {
        let mut seen = [[false; 128]; 64];
        for warp in 0..4 {
            for lane in 0..32 {
                for i in 0..64 {
                    let (r, c) = acc_pos(warp, lane, i);
                    assert!(!seen[r][c], "warp {warp} lane {lane} reg {i}");
                    seen[r][c] = true;
                }
            }
        }
        // The mma.sync m16n8 C layout in each 8-column block.
        assert_eq!(acc_pos(1, 5, 4 * 3 + 2), (16 + 1 + 8, 24 + 2));
        assert_eq!(acc_pos(0, 0, 0), (crate::gemm::acc_row(0, 0), crate::gemm::acc_col(0, 0)));
    }

    #[test]
    fn descriptor_fields() {
        let d = sw128_desc(0x1_2340);
        assert_eq!(d & 0x3fff, 0x1234);
        assert_eq!((d >> 16) & 0x3fff, 1);
        assert_eq!((d >> 32) & 0x3fff, 64);
        assert_eq!(d >> 62, 1);
    }
}
