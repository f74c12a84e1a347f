//! Unit tests of the block pool: LRU order, refcounts, the null block, prefix reuse (hits,
//! misses, collision safety) and the host tier's swaps.

use super::pool::BlockPool;
use super::reuse::{ROOT, Registered};
use super::{BlockId, KvCacheConfig, PoolError};

fn pool(n: usize, reuse: bool, host: usize) -> BlockPool {
    BlockPool::new(&KvCacheConfig {
        tokens_per_block: 8,
        num_blocks: n,
        enable_reuse: reuse,
        host_cache_blocks: host,
    })
    .unwrap()
}

/// Allocates one block per 8 tokens and registers the full ones as a chain.
fn fill(p: &mut BlockPool, tokens: &[u32]) -> Vec<BlockId> {
    let mut parent = ROOT;
    let mut table = Vec::new();
    for chunk in tokens.chunks(8) {
        let b = p.allocate().unwrap();
        table.push(b);
        if chunk.len() == 8 {
            match p.register(parent, chunk, b) {
                Registered::New(s) | Registered::Duplicate(s) => parent = s,
                r => panic!("{r:?}"),
            }
        }
    }
    table
}

fn seq(start: u32, n: usize) -> Vec<u32> {
    (start..start + n as u32).collect()
}

#[test]
fn lru_free_order_and_null_block() {
    let mut p = pool(5, false, 0);
    assert_eq!(
        p.free_list(),
        vec![1, 2, 3, 4],
        "block 0 is never free-listed"
    );
    let a: Vec<_> = (0..4).map(|_| p.allocate().unwrap()).collect();
    assert_eq!(a, vec![1, 2, 3, 4]);
    assert_eq!(p.allocate(), None);
    for b in [3, 1, 4] {
        p.release(b).unwrap();
    }
    assert_eq!(p.free_list(), vec![3, 1, 4], "freed last = evicted last");
    assert_eq!(p.allocate(), Some(3));
    assert_eq!(p.release(0), Err(PoolError::NullBlock));
    assert_eq!(
        p.release(9),
        Err(PoolError::UnknownBlock {
            block: 9,
            num_blocks: 5
        })
    );
    p.check().unwrap();
}

#[test]
fn refcounts_never_underflow() {
    let mut p = pool(4, true, 0);
    let t = fill(&mut p, &seq(0, 8));
    let take = p.take_prefix(&seq(0, 16), 1);
    assert_eq!(take.blocks, t);
    assert_eq!(p.refcount(t[0]), 2);
    assert_eq!((p.free_blocks(), p.used_blocks()), (2, 1));
    p.release(t[0]).unwrap();
    p.release(t[0]).unwrap();
    assert_eq!(
        p.release(t[0]),
        Err(PoolError::NotAllocated { block: t[0] })
    );
    assert_eq!(p.refcount(t[0]), 0);
    assert_eq!((p.free_blocks(), p.used_blocks()), (3, 0));
    p.check().unwrap();
}

#[test]
fn reuse_hit_miss_and_eviction() {
    let mut p = pool(4, true, 0);
    let t = fill(&mut p, &seq(0, 20)); // 2 full blocks + 1 partial
    for &b in &t {
        p.release(b).unwrap();
    }
    assert_eq!(p.cached_blocks(), (2, 0));
    // Full hit on the two registered blocks; the partial one was never registered.
    assert_eq!(p.match_prefix(&seq(0, 24), 3).blocks, 2);
    // Diverging in the second block: one block.
    let mut other = seq(0, 16);
    other[12] = 999;
    assert_eq!(p.match_prefix(&other, 2).blocks, 1);
    // Different first block: miss (the chain starts at the root).
    assert_eq!(p.match_prefix(&seq(8, 16), 2).blocks, 0);
    // Allocation takes the LRU front, evicting its entry: t[0] was released first.
    assert_eq!(p.allocate(), Some(t[0]));
    assert_eq!(
        p.match_prefix(&seq(0, 24), 3).blocks,
        0,
        "child unreachable without its parent"
    );
    p.check().unwrap();
}

#[test]
fn hash_collisions_never_share_blocks() {
    let cfg = KvCacheConfig {
        tokens_per_block: 8,
        num_blocks: 6,
        enable_reuse: true,
        host_cache_blocks: 0,
    };
    let mut p = BlockPool::with_hasher(&cfg, |_, _| 7).unwrap();
    let a = p.allocate().unwrap();
    assert!(matches!(
        p.register(ROOT, &seq(0, 8), a),
        Registered::New(_)
    ));
    let b = p.allocate().unwrap();
    assert_eq!(
        p.register(ROOT, &seq(100, 8), b),
        Registered::Collision,
        "same hash, other tokens"
    );
    assert_eq!(
        p.match_prefix(&seq(100, 9), 1).blocks,
        0,
        "identical hash but different tokens: miss"
    );
    let m = p.take_prefix(&seq(0, 9), 1);
    assert_eq!(m.blocks, vec![a]);
    p.check().unwrap();
}

#[test]
fn host_tier_swaps_out_and_in() {
    let mut p = pool(3, true, 1); // two usable blocks, one host slot
    let t = fill(&mut p, &seq(0, 16));
    for &b in &t {
        p.release(b).unwrap();
    }
    // The allocation evicts the LRU cached block to the host slot.
    let x = p.allocate().unwrap();
    let (out, inn) = p.take_swaps();
    assert_eq!((out, inn), (vec![(t[0], 0)], vec![]));
    assert_eq!(p.cached_blocks(), (1, 1));
    p.release(x).unwrap();
    // Root block is on the host: a hit allocates a device block and swaps in.
    let m = p.match_prefix(&seq(0, 9), 1);
    assert_eq!((m.blocks, m.cost), (1, 1));
    let take = p.take_prefix(&seq(0, 9), 1);
    assert_eq!(take.swapped_in, 1);
    let (out, inn) = p.take_swaps();
    // The allocation for the swap-in evicted t[1] (LRU front), which could not go to the
    // host: its only slot is being read this step.
    assert_eq!(inn, vec![(0, take.blocks[0])]);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(p.refcount(take.blocks[0]), 1);
    p.check().unwrap();
    p.begin_step();
    p.check().unwrap();
}

#[test]
fn retain_shares_a_held_block() {
    let mut p = pool(4, false, 0);
    let b = p.allocate().unwrap();
    p.retain(b).unwrap();
    assert_eq!(p.refcount(b), 2);
    p.release(b).unwrap();
    assert_eq!(p.free_blocks(), 2, "still held once");
    p.release(b).unwrap();
    assert_eq!(p.retain(b), Err(PoolError::NotAllocated { block: b }));
    assert_eq!(p.retain(0), Err(PoolError::NullBlock));
    assert!(matches!(p.retain(9), Err(PoolError::UnknownBlock { .. })));
    p.check().unwrap();
}
