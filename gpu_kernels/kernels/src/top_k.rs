//! `logits_top_k_<t>` and `logits_top_k_merge`: per row of logits, the [`TOP_K_MAX`]
//! largest values with their ids and the row's sum of `exp((x - max) · inv_temperature)`
//! (see `kernel_abi::TopKParams`), so that greedy and top-k sampling read a few hundred
//! bytes per row instead of the whole vocabulary.
//!
//! Selection (WarpSelect-style): each warp keeps a sorted list of 32 `(value, id)` entries,
//! lane `j` holding the `j`-th best. Values arrive one per lane; the lanes whose value ranks
//! before the list's last entry vote, and each voter is inserted in turn (a second ballot
//! gives its rank; the entries after it move down one lane). Lists meet in shared memory and
//! warp 0 merges them the same way. The order is total (value descending, then id
//! ascending), so the result does not depend on the insertion order.
//!
//! A short row (batch 1's 128k-entry row) is split over up to 64 blocks so that its latency
//! is one round of loads, not 16; the merge launch combines the parts' lists and their
//! running (max, sum) in base 2. Every value is read once.

use crate::arch::{self, ballot, shfl_idx_f32, shfl_idx_u32, sync_threads, unroll4};
use crate::dtype::{Bf16, Storage, F16, F32};
use crate::elementwise::entry;
use crate::reduce::{block_reduce, Mergeable};
use crate::softmax::Stats2;
use kernel_abi::{TopKParams, TOP_K_MAX};

const MAX_WARPS: usize = 32;
/// Independent loads in flight per thread (two `unroll4!`s).
const UNROLL: usize = 8;
const LOG2_E: f32 = core::f32::consts::LOG2_E;

#[unsafe(link_section = ".nvptx.shared")]
static mut LIST_VALUES: [[f32; TOP_K_MAX]; MAX_WARPS] = [[0.0; TOP_K_MAX]; MAX_WARPS];
#[unsafe(link_section = ".nvptx.shared")]
static mut LIST_IDS: [[u32; TOP_K_MAX]; MAX_WARPS] = [[0; TOP_K_MAX]; MAX_WARPS];

/// One lane's entry of a warp's sorted list.
#[derive(Clone, Copy)]
struct Entry {
    value: f32,
    id: u32,
}

const EMPTY: Entry = Entry { value: f32::NEG_INFINITY, id: u32::MAX };

impl Entry {
    /// Larger value first, then lower id.
    #[inline(always)]
    fn ranks_before(self, o: Entry) -> bool {
        self.value > o.value || (self.value == o.value && self.id < o.id)
    }

    #[inline(always)]
    fn from_lane(self, lane: u32) -> Entry {
        Entry { value: shfl_idx_f32(self.value, lane), id: shfl_idx_u32(self.id, lane) }
    }
}

/// Offers each lane's `cand` to the warp's sorted `list` (whole warp, converged). NaN and
/// `-inf` are never inserted.
#[inline(always)]
fn offer(list: &mut Entry, lane: u32, cand: Entry) {
    let last = list.from_lane(TOP_K_MAX as u32 - 1);
    let mut voters = ballot(cand.value > f32::NEG_INFINITY && cand.ranks_before(last));
    while voters != 0 {
        let src = voters.trailing_zeros();
        voters &= voters - 1;
        let c = cand.from_lane(src);
        // Entries before `c` are lanes 0..rank (the list is sorted); rank 32 changes nothing.
        let rank = ballot(list.ranks_before(c)).count_ones();
        let prev = list.from_lane(lane.wrapping_sub(1) & 31);
        if lane == rank {
            *list = c;
        } else if lane > rank {
            *list = prev;
        }
    }
}

/// Merges every warp's list into warp 0's (whole block; the result is valid in warp 0).
#[inline(always)]
fn merge_block_lists(list: &mut Entry, lane: u32, warp: usize, warps: usize) {
    let (lv, li) = (&raw mut LIST_VALUES, &raw mut LIST_IDS);
    // SAFETY: `warp < 32` (blockDim ≤ 1024) and each lane writes its own slot.
    unsafe {
        (*lv)[warp][lane as usize] = list.value;
        (*li)[warp][lane as usize] = list.id;
    }
    sync_threads();
    if warp == 0 {
        for w in 1..warps {
            // SAFETY: rows below `warps` were written before the barrier.
            let cand = unsafe { Entry { value: (*lv)[w][lane as usize], id: (*li)[w][lane as usize] } };
            offer(list, lane, cand);
        }
    }
    // The lists are read again by the next use: wait until warp 0 is done.
    sync_threads();
}

/// Writes warp 0's list at entry `at` of `ids`/`values`.
#[inline(always)]
unsafe fn store_list(list: Entry, lane: u32, ids: *mut u32, values: *mut f32, at: usize) {
    // SAFETY: the caller passes buffers holding `at + TOP_K_MAX` entries.
    unsafe {
        *ids.add(at + lane as usize) = list.id;
        *values.add(at + lane as usize) = list.value;
    }
}

/// One round's values of a thread: elements `first + k · stride` below `end` (`-inf` past it).
#[inline(always)]
fn load_round<S: Storage>(row: *const u8, end: usize, first: usize, stride: usize) -> [f32; UNROLL] {
    let mut vals = [f32::NEG_INFINITY; UNROLL];
    unroll4!(|k| {
        for j in [k, k + 4] {
            let i = first + j * stride;
            if i < end {
                // SAFETY: `i < end ≤ vocab`, inside the row (the wrapper checked the buffer).
                vals[j] = unsafe { S::load(row, i) };
            }
        }
    });
    vals
}

/// Launch 1: one block per (split, row).
#[inline(always)]
unsafe fn top_k_part<S: Storage>(p: TopKParams) {
    let (s, r) = (arch::block_idx() as usize, arch::block_idx_y() as usize);
    let splits = p.splits as usize;
    if r >= p.rows as usize || s >= splits {
        return;
    }
    let row = p.logits.as_ptr::<u8>().wrapping_add(r * p.row_stride as usize * S::SIZE);
    let vocab = p.vocab as usize;
    let chunk = vocab.div_ceil(splits);
    let (begin, end) = ((s * chunk).min(vocab), ((s + 1) * chunk).min(vocab));
    let tid = arch::thread_idx() as usize;
    let bd = arch::block_dim() as usize;
    let (lane, warp) = ((tid % 32) as u32, tid / 32);
    // SAFETY: `inv_temperature` holds `rows` values.
    let scale = unsafe { *p.inv_temperature.as_ptr::<f32>().add(r) } * LOG2_E;

    let mut list = EMPTY;
    let mut stats = Stats2::IDENTITY;
    let mut start = begin;
    // The round bound is block-uniform, so warps stay converged for the ballots.
    while start < end {
        let vals = load_round::<S>(row, end, start + tid, bd);
        unroll4!(|k| {
            offer(&mut list, lane, Entry { value: vals[k], id: (start + tid + k * bd) as u32 });
        });
        unroll4!(|k| {
            offer(&mut list, lane, Entry { value: vals[k + 4], id: (start + tid + (k + 4) * bd) as u32 });
        });
        let mut y = [f32::NEG_INFINITY; UNROLL];
        unroll4!(|k| {
            for j in [k, k + 4] {
                // NaN adds nothing (as -inf).
                if vals[j] > f32::NEG_INFINITY {
                    y[j] = vals[j] * scale;
                }
            }
        });
        stats.push(&y);
        start += UNROLL * bd;
    }
    merge_block_lists(&mut list, lane, warp, bd / 32);
    let stats = block_reduce(stats);
    let q = r * splits + s;
    if warp == 0 {
        // SAFETY: the part buffers hold `rows × splits` lists and stat pairs (host wrapper).
        unsafe { store_list(list, lane, p.part_ids.as_mut_ptr(), p.part_values.as_mut_ptr(), q * TOP_K_MAX) };
        if lane == 0 {
            // SAFETY: as above.
            unsafe {
                *p.part_stats.as_mut_ptr::<f32>().add(2 * q) = stats.max;
                *p.part_stats.as_mut_ptr::<f32>().add(2 * q + 1) = stats.sum;
            }
        }
    }
}

/// Launch 2: one block per row; warp `w` takes parts `w, w + warps, …`.
#[inline(always)]
unsafe fn top_k_merge(p: TopKParams) {
    let r = arch::block_idx() as usize;
    if r >= p.rows as usize {
        return;
    }
    let splits = p.splits as usize;
    let tid = arch::thread_idx() as usize;
    let bd = arch::block_dim() as usize;
    let (lane, warp) = ((tid % 32) as u32, tid / 32);
    let warps = bd / 32;
    let (ids, values, part_stats) = (p.part_ids.as_ptr::<u32>(), p.part_values.as_ptr::<f32>(), p.part_stats.as_ptr::<f32>());
    let mut list = EMPTY;
    let mut q = warp;
    // Parts per warp differ by one at most: a warp without a part offers -inf (a no-op),
    // so every warp runs the same number of rounds and stays converged.
    while q - warp < splits {
        let cand = if q < splits {
            let at = (r * splits + q) * TOP_K_MAX + lane as usize;
            // SAFETY: `q < splits`: inside the parts written by launch 1.
            unsafe { Entry { value: *values.add(at), id: *ids.add(at) } }
        } else {
            EMPTY
        };
        offer(&mut list, lane, cand);
        q += warps;
    }
    merge_block_lists(&mut list, lane, warp, warps);
    let mut stats = Stats2::IDENTITY;
    let mut q = tid;
    while q < splits {
        let at = 2 * (r * splits + q);
        // SAFETY: as above.
        stats = stats.merge(unsafe { Stats2 { max: *part_stats.add(at), sum: *part_stats.add(at + 1) } });
        q += bd;
    }
    let stats = block_reduce(stats);
    if warp == 0 {
        // SAFETY: the output buffers hold `rows` lists and stat pairs (host wrapper).
        unsafe { store_list(list, lane, p.out_ids.as_mut_ptr(), p.out_values.as_mut_ptr(), r * TOP_K_MAX) };
        if lane == 0 {
            // The best value is the row max; the base-2 max is it times the scale, so the sum
            // is relative to it.
            let max = list.value;
            let sum = if max > f32::NEG_INFINITY { stats.sum } else { 0.0 };
            // SAFETY: as above.
            unsafe {
                *p.out_stats.as_mut_ptr::<f32>().add(2 * r) = max;
                *p.out_stats.as_mut_ptr::<f32>().add(2 * r + 1) = sum;
            }
        }
    }
}

entry!(logits_top_k_f32, TopKParams, |p| top_k_part::<F32>(p));
entry!(logits_top_k_f16, TopKParams, |p| top_k_part::<F16>(p));
entry!(logits_top_k_bf16, TopKParams, |p| top_k_part::<Bf16>(p));
entry!(logits_top_k_merge, TopKParams, |p| top_k_merge(p));
