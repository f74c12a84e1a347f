//! The tensor-core GEMM and fused gate/up MLP kernels: their paths (specialisations),
//! launch geometry and shape rules, the one place the kernels, the launch wrappers
//! (`host_runtime::kernels::gemm`) and the tests take them from.
//!
//! # What is computed
//!
//! - `gemm_*`: `out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) (+ residual[m, n])`, all row-major,
//!   `w` in `nn.Linear` layout `[out, in]`; f32 accumulation, one rounding on store.
//! - `gate_up_silu_*`: `out[m, n] = silu(x · w_gᵀ) * (x · w_uᵀ)` where `w` is
//!   `[2 n, k]`: rows `0 .. n` are the gate projection, rows `n .. 2 n` the up projection
//!   (`n` = the MLP's intermediate size). One launch; the gate and up products of an output
//!   column are computed by the same warp, so the epilogue needs no exchange.
//!
//! # Shape rules (checked by the host before every launch)
//!
//! `m ≥ 1` (any), `n` and `k` multiples of 8 ([`ALIGN`]: every row of `x`, `w`, `out` and
//! `residual` then starts on a 16-byte boundary, the unit of `cp.async`/`ld.global.v4`),
//! all of them below 2³¹. Element types: bf16 and f16 ([`GEMM_TYPES`]).
//!
//! # Paths
//!
//! | path    | entry points                                   | used for                  |
//! |---------|------------------------------------------------|---------------------------|
//! | skinny  | `gemm_skinny_<t>`, `gate_up_silu_skinny_<t>`   | `m ≤` [`SKINNY_MAX_M`]    |
//! | tile64  | `gemm_tile64_<t>`, `gate_up_silu_tile64_<t>`   | `m >` [`SKINNY_MAX_M`], small grids |
//! | tile128 | `gemm_tile128_<t>`, `gate_up_silu_tile128_<t>` | `m ≥ 128`, grids ≥ [`TILE128_MIN_CTAS_PER_SM`] × SMs ([`choose_path`]) |
//! | wgmma   | `gemm_wgmma_<t>`, `gate_up_silu_wgmma_<t>`     | sm_90a PTX only: `m ≥` [`WGMMA_MIN_M`] |
//!
//! - **wgmma** (Hopper, sm_90a PTX only: [`crate::manifest::SM90A_ENTRY_POINTS`]): a CTA of
//!   [`WGMMA_THREADS`] threads (2 warpgroups) computes a `128 × 128` output tile (gate/up: 64
//!   output columns from 64 gate + 64 up weight rows); each warpgroup multiplies its 64 rows
//!   by the whole 128-row weight tile with `wgmma.mma_async.m64n128k16` (both operands from
//!   shared memory through matrix descriptors, 128-byte swizzle). `k` advances
//!   [`WGMMA_BK`] at a time through [`WGMMA_STAGES`] stages filled by `cp.async` in dynamic
//!   shared memory ([`tile_smem_bytes`]).
//! - **tile128**: a CTA of [`TILE128_THREADS`] threads (4 warps, 2 × 2, each a 64 × 64 warp
//!   tile) computes a `128 × 128` output tile (gate/up: 64 output columns = 128 weight rows)
//!   through a [`TILE128_STAGES`]-stage pipeline in dynamic shared memory
//!   ([`tile_smem_bytes`], above the 48 KiB static limit: the launch opts in); two CTAs fit
//!   an SM. Used for `m ≥ 128` when it gives at least [`TILE128_MIN_CTAS_PER_SM`] CTAs per SM.
//! - **tile64**: a CTA of [`TILE_THREADS`] threads (8 warps, 2 × 4, 32 × 32 warp tiles)
//!   computes a `64 × 128` output tile, 4 stages in 48 KiB of static shared memory.
//!   Both tiled paths: `k` is walked in steps of [`TILE_K`] through a multi-stage `cp.async` pipeline in XOR-
//!   swizzled shared memory, fragments come from `ldmatrix.x4`, products from
//!   `mma.sync.m16n8k16` (f32 accumulators). Grid `(n tiles × m tiles)`, one linear index
//!   per tile, ordered in groups of 8 N tiles (M-major inside a group) for L2 reuse.
//! - **skinny** (decode, memory-bound): a CTA of [`SKINNY_THREADS`] threads (or
//!   [`SKINNY_MAX_THREADS`] when the grid is small: [`skinny_threads`]) owns 16 weight
//!   rows (gate/up: 8 gate + the 8 matching up rows) and splits `k` over its warps; each lane
//!   streams whole 16-byte chunks of `w` with several loads in flight, the tensor cores
//!   multiply them by the (at most 16) rows of `x`, and the warps' partial sums are added
//!   through shared memory. `w` is read exactly once. Grid `(ceil(rows / 16))`.
//!
//! The host may run any path at any valid shape (tests do); the choice only affects speed.

use crate::manifest::PtxArch;
use crate::StorageType;

/// `n` and `k` must be multiples of this (16-byte rows of 16-bit elements).
pub const ALIGN: usize = 8;
/// Element types with GEMM entry points.
pub const GEMM_TYPES: [StorageType; 2] = [StorageType::Bf16, StorageType::F16];
/// The largest `m` the skinny path handles (two 8-token tensor-core N tiles).
pub const SKINNY_MAX_M: usize = 16;
/// Threads per CTA of the skinny path by default (4 warps splitting `k`).
pub const SKINNY_THREADS: u32 = 128;
/// Threads per CTA of the skinny path when its grid is small ([`skinny_threads`]): 8 warps,
/// twice the weight bytes in flight per CTA. The kernel takes these two block sizes only.
pub const SKINNY_MAX_THREADS: u32 = 256;
/// Weight rows per skinny CTA (the M of one `m16n8k16` product).
pub const SKINNY_ROWS: usize = 16;
/// Threads per CTA of the tile64 path (8 warps).
pub const TILE_THREADS: u32 = 256;
/// Threads per CTA of the tile128 path (4 warps of 64 × 64: 2 along M × 2 along N).
pub const TILE128_THREADS: u32 = 128;
/// `cp.async` pipeline stages of the tile128 path.
pub const TILE128_STAGES: usize = 4;
/// The wrappers pick tile128 (over tile64) when its grid has at least this many CTAs per SM.
pub const TILE128_MIN_CTAS_PER_SM: usize = 1;

/// Threads per CTA of the wgmma path (2 warpgroups of 4 warps).
pub const WGMMA_THREADS: u32 = 256;
/// `k` per pipeline stage of the wgmma path: one 128-byte swizzle row of 16-bit elements.
pub const WGMMA_BK: usize = 64;
/// `cp.async` pipeline stages of the wgmma path (`WGMMA_STAGES - 2` in flight while one is
/// multiplied and the warpgroups may still read the one before).
pub const WGMMA_STAGES: usize = 5;
/// Bytes of one wgmma stage: 128 rows of `x` and 128 rows of `w`, [`WGMMA_BK`] each.
pub const WGMMA_STAGE_BYTES: usize = (128 + TILE_N) * WGMMA_BK * 2;
/// The wrappers pick the wgmma path (where the PTX has it) from this `m` up: every `m` the
/// skinny path does not take. Even at `m` = 17–100, where most of a 128-row tile is padding,
/// it was 1.3–2.2× faster than tile64 and tile128 at every Llama-8B shape on the H200
/// (2026-12-03 session 6, `inflight-gemm-bench --paths --m 17,32,64,100`): those sizes are
/// bound by the weight stream, which wgmma's deep `cp.async` pipeline keeps fuller.
pub const WGMMA_MIN_M: usize = SKINNY_MAX_M + 1;

/// Dynamic shared memory (bytes) a launch of `path` needs: tile128 keeps its
/// [`TILE128_STAGES`] stages of 128 + [`TILE_N`] rows of [`TILE_K`] 16-bit elements there
/// (64 KiB, above the 48 KiB a launch gets without opting in); wgmma its [`WGMMA_STAGES`]
/// stages plus 1 KiB to align them to the 1024-byte period of the 128-byte swizzle;
/// tile64 and skinny use static shared memory only.
pub const fn tile_smem_bytes(path: GemmPath) -> u32 {
    match path {
        GemmPath::Tile128 => (TILE128_STAGES * (128 + TILE_N) * TILE_K * 2) as u32,
        GemmPath::Wgmma => (WGMMA_STAGES * WGMMA_STAGE_BYTES + 1024) as u32,
        GemmPath::Tile64 | GemmPath::Skinny => 0,
    }
}
/// Weight rows (N) per tiled CTA.
pub const TILE_N: usize = 128;
/// `k` per pipeline stage of the tiled paths.
pub const TILE_K: usize = 32;

/// The GEMM kernel family: plain GEMM or the fused gate/up SiLU·mul.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmOp {
    Gemm,
    GateUpSilu,
}

/// The kernel paths (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmPath {
    Skinny,
    Tile64,
    Tile128,
    /// Hopper warpgroup MMA: only in the sm_90a PTX ([`GemmPath::available`]).
    Wgmma,
}

impl GemmPath {
    pub const ALL: [GemmPath; 4] = [GemmPath::Skinny, GemmPath::Tile64, GemmPath::Tile128, GemmPath::Wgmma];

    /// The path's name, as in its entry points (`tile128`, `wgmma`, …).
    pub const fn tag(self) -> &'static str {
        match self {
            GemmPath::Skinny => "skinny",
            GemmPath::Tile64 => "tile64",
            GemmPath::Tile128 => "tile128",
            GemmPath::Wgmma => "wgmma",
        }
    }

    /// Whether PTX built for `arch` has this path's kernels.
    pub fn available(self, arch: PtxArch) -> bool {
        self != GemmPath::Wgmma || arch.has_wgmma()
    }

    /// Output rows (M) per CTA of a tiled path.
    pub const fn tile_m(self) -> usize {
        match self {
            GemmPath::Skinny => 16,
            GemmPath::Tile64 => 64,
            GemmPath::Tile128 | GemmPath::Wgmma => 128,
        }
    }

    /// Threads per CTA.
    pub const fn threads(self) -> u32 {
        match self {
            GemmPath::Skinny => SKINNY_THREADS,
            GemmPath::Tile64 => TILE_THREADS,
            GemmPath::Tile128 => TILE128_THREADS,
            GemmPath::Wgmma => WGMMA_THREADS,
        }
    }
}

impl GemmOp {
    fn family(self) -> &'static str {
        match self {
            GemmOp::Gemm => "gemm",
            GemmOp::GateUpSilu => "gate_up_silu",
        }
    }

    /// Output columns one CTA of `path` computes (gate/up: half its weight rows).
    pub const fn cols_per_cta(self, path: GemmPath) -> usize {
        let rows = match path {
            GemmPath::Skinny => SKINNY_ROWS,
            _ => TILE_N,
        };
        match self {
            GemmOp::Gemm => rows,
            GemmOp::GateUpSilu => rows / 2,
        }
    }
}

/// The entry point of `op` on `path` for element type `t` (bf16 or f16), e.g.
/// `gemm_tile128_bf16`; `None` for types without GEMM kernels.
pub fn entry_name(op: GemmOp, path: GemmPath, t: StorageType) -> Option<&'static str> {
    const NAMES: [[[&str; 2]; 4]; 2] = [
        [
            ["gemm_skinny_bf16", "gemm_skinny_f16"],
            ["gemm_tile64_bf16", "gemm_tile64_f16"],
            ["gemm_tile128_bf16", "gemm_tile128_f16"],
            ["gemm_wgmma_bf16", "gemm_wgmma_f16"],
        ],
        [
            ["gate_up_silu_skinny_bf16", "gate_up_silu_skinny_f16"],
            ["gate_up_silu_tile64_bf16", "gate_up_silu_tile64_f16"],
            ["gate_up_silu_tile128_bf16", "gate_up_silu_tile128_f16"],
            ["gate_up_silu_wgmma_bf16", "gate_up_silu_wgmma_f16"],
        ],
    ];
    let ti = match t {
        StorageType::Bf16 => 0,
        StorageType::F16 => 1,
        StorageType::F32 => return None,
    };
    let pi = GemmPath::ALL.iter().position(|p| *p == path)?;
    let name = NAMES[op as usize][pi][ti];
    debug_assert!(name.starts_with(op.family()) && name.contains(path.tag()));
    Some(name)
}

/// Grid `(x, y)` for `op` on `path` over an `m × n` output.
pub fn grid(op: GemmOp, path: GemmPath, m: usize, n: usize) -> (usize, usize) {
    let cols = n.div_ceil(op.cols_per_cta(path));
    match path {
        GemmPath::Skinny => (cols, 1),
        // One linear index per tile; the kernel orders them (`kernel_math::gemm::tile_of`).
        _ => (cols * m.div_ceil(path.tile_m()), 1),
    }
}

/// The path the launch wrappers pick: skinny for decode-sized `m`; else tile128 (128 × 128
/// CTA tiles, 64 × 64 warp tiles: the fewest shared-memory reads per product) when `m` fills
/// its 128-row tiles (`m ≥ 128`) and its grid has at least [`TILE128_MIN_CTAS_PER_SM`] CTAs
/// per SM, tile64 otherwise (more, smaller CTAs keep every SM busy). On the H200
/// (2026-12-03 session 4) this picked the faster of the two at every Llama-8B shape with
/// `m` in {64, 128, 256, 4096}. `multiprocessors = 0` counts as 132 (H100/H200). Where the loaded PTX has the wgmma
/// kernels (`arch`: sm_90a on an H100/H200), wgmma for `m ≥` [`WGMMA_MIN_M`].
pub fn choose_path(op: GemmOp, m: usize, n: usize, multiprocessors: usize, arch: PtxArch) -> GemmPath {
    if m <= SKINNY_MAX_M {
        return GemmPath::Skinny;
    }
    if m >= WGMMA_MIN_M && GemmPath::Wgmma.available(arch) {
        return GemmPath::Wgmma;
    }
    let sms = if multiprocessors == 0 { 132 } else { multiprocessors };
    if m >= 128 && grid(op, GemmPath::Tile128, m, n).0 >= TILE128_MIN_CTAS_PER_SM * sms { GemmPath::Tile128 } else { GemmPath::Tile64 }
}

/// Most CTAs of a wgmma cluster splitting the `k` of one tile.
pub const WGMMA_MAX_SPLIT: usize = 4;
/// Fewest `k` stages ([`WGMMA_BK`] each) per CTA of a split tile.
pub const WGMMA_MIN_STAGES_PER_SPLIT: usize = 4;

/// CTAs per output tile of a wgmma launch (a cluster of that many CTAs splits `k` and sums
/// through distributed shared memory; grid = tiles × split): the largest of 4, 2 whose grid
/// still fits on the `multiprocessors` at once (one CTA per SM) while each CTA keeps at
/// least [`WGMMA_MIN_STAGES_PER_SPLIT`] stages; else 1. It fills the SMs at the small grids
/// (e.g. `m = 256`, `n = 4096`: 64 tiles → 128 CTAs on 132 SMs). `multiprocessors = 0`
/// counts as 132.
pub fn wgmma_split(op: GemmOp, m: usize, n: usize, k: usize, multiprocessors: usize) -> usize {
    let sms = if multiprocessors == 0 { 132 } else { multiprocessors };
    let tiles = grid(op, GemmPath::Wgmma, m, n).0;
    let stages = k.div_ceil(WGMMA_BK);
    let mut split = WGMMA_MAX_SPLIT;
    while split > 1 {
        if tiles * split <= sms && stages >= split * WGMMA_MIN_STAGES_PER_SPLIT {
            return split;
        }
        split /= 2;
    }
    1
}

/// Threads per skinny CTA: [`SKINNY_MAX_THREADS`] when all `ctas` of the grid fit on the
/// `multiprocessors` at once with that block size (`wide_per_sm` CTAs each, as the
/// occupancy calculator says), so each SM streams more weight bytes at a time; otherwise
/// [`SKINNY_THREADS`] (more, smaller CTAs in one wave rather than a second wave).
pub fn skinny_threads(ctas: usize, wide_per_sm: usize, multiprocessors: usize) -> u32 {
    if ctas <= wide_per_sm * multiprocessors { SKINNY_MAX_THREADS } else { SKINNY_THREADS }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ENTRY_POINTS;

    const SM90: PtxArch = PtxArch::SM90;

    #[test]
    fn every_entry_point_is_in_the_manifest() {
        for op in [GemmOp::Gemm, GemmOp::GateUpSilu] {
            for path in GemmPath::ALL {
                for t in GEMM_TYPES {
                    let name = entry_name(op, path, t).unwrap();
                    assert_eq!(ENTRY_POINTS.contains(&name), path != GemmPath::Wgmma, "{name}");
                    assert!(PtxArch::SM90A.exports(name), "{name}");
                    assert_eq!(SM90.exports(name), path.available(SM90), "{name}");
                    assert!(name.ends_with(t.suffix()));
                }
                assert!(entry_name(op, path, StorageType::F32).is_none());
            }
        }
    }

    #[test]
    fn paths_by_shape() {
        assert_eq!(choose_path(GemmOp::Gemm, 1, 4096, 132, SM90), GemmPath::Skinny);
        assert_eq!(choose_path(GemmOp::Gemm, 16, 4096, 132, SM90), GemmPath::Skinny);
        assert_eq!(choose_path(GemmOp::Gemm, 17, 4096, 132, SM90), GemmPath::Tile64);
        assert_eq!(choose_path(GemmOp::Gemm, 4096, 4096, 132, SM90), GemmPath::Tile128);
        assert_eq!(choose_path(GemmOp::Gemm, 256, 4096, 132, SM90), GemmPath::Tile64);
        assert_eq!(choose_path(GemmOp::GateUpSilu, 256, 14336, 132, SM90), GemmPath::Tile128);
        assert_eq!(choose_path(GemmOp::GateUpSilu, 64, 14336, 132, SM90), GemmPath::Tile64);
        assert_eq!(choose_path(GemmOp::Gemm, 128, 28672, 132, SM90), GemmPath::Tile128);
        assert_eq!(choose_path(GemmOp::Gemm, 256, 6144, 132, SM90), GemmPath::Tile64);
        assert_eq!(tile_smem_bytes(GemmPath::Tile128), 65536);
        // sm_90a: wgmma for every m past the skinny path.
        let a = PtxArch::SM90A;
        assert_eq!(choose_path(GemmOp::Gemm, 16, 4096, 132, a), GemmPath::Skinny);
        assert_eq!(choose_path(GemmOp::Gemm, 17, 4096, 132, a), GemmPath::Wgmma);
        assert_eq!(choose_path(GemmOp::Gemm, 100, 4096, 132, a), GemmPath::Wgmma);
        assert_eq!(choose_path(GemmOp::Gemm, 256, 4096, 132, a), GemmPath::Wgmma);
        assert_eq!(choose_path(GemmOp::GateUpSilu, 4096, 14336, 132, a), GemmPath::Wgmma);
        assert_eq!(tile_smem_bytes(GemmPath::Wgmma), 5 * 32768 + 1024);
        assert_eq!(grid(GemmOp::GateUpSilu, GemmPath::Wgmma, 256, 14336), (448, 1));
        assert_eq!(grid(GemmOp::Gemm, GemmPath::Wgmma, 4096, 4096), (1024, 1));
        // Split k where the tiles leave SMs idle: 64 tiles → 2, 32 → 4, 96 or 1024 → 1.
        assert_eq!(wgmma_split(GemmOp::Gemm, 256, 4096, 4096, 132), 2);
        assert_eq!(wgmma_split(GemmOp::Gemm, 256, 4096, 14336, 132), 2);
        assert_eq!(wgmma_split(GemmOp::Gemm, 128, 4096, 4096, 132), 4);
        assert_eq!(wgmma_split(GemmOp::Gemm, 256, 6144, 4096, 132), 1);
        assert_eq!(wgmma_split(GemmOp::Gemm, 4096, 4096, 4096, 132), 1);
        assert_eq!(wgmma_split(GemmOp::GateUpSilu, 256, 14336, 4096, 132), 1);
        // Too little k to share: 7 stages stay whole, 8 split in 2.
        assert_eq!(wgmma_split(GemmOp::Gemm, 1, 8, 448, 132), 1);
        assert_eq!(wgmma_split(GemmOp::Gemm, 1, 8, 449, 132), 2);
        assert_eq!(tile_smem_bytes(GemmPath::Tile64), 0);
        assert_eq!(grid(GemmOp::GateUpSilu, GemmPath::Tile128, 256, 14336), (448, 1));
        assert_eq!(grid(GemmOp::Gemm, GemmPath::Skinny, 3, 4096), (256, 1));
        // 4096 rows: 256 CTAs fit 2 per SM on 132 SMs; 6144 rows (384 CTAs) do not.
        assert_eq!(skinny_threads(256, 2, 132), SKINNY_MAX_THREADS);
        assert_eq!(skinny_threads(384, 2, 132), SKINNY_THREADS);
        assert_eq!(skinny_threads(1, 0, 132), SKINNY_THREADS);
    }
}
