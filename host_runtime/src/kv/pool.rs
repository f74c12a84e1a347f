//! The device block pool: reference counts, the LRU free list, reusable-block bookkeeping
//! and the host tier's swap lists.
//!
//! Invariants (checked by [`BlockPool::check`]):
//! - block 0 (the null block) is never handed out: refcount 0, never on the free list;
//! - a usable block is on the free list iff its refcount is 0, so `free + used == usable`;
//! - the free list is LRU: a released block goes to the back, allocation takes the front
//!   (released last = evicted last); all operations are O(1) except prefix walks (O(blocks));
//! - a block whose contents are a registered reuse entry keeps it while on the free list
//!   (still findable); allocating it evicts the entry: to a host slot when there is a host
//!   tier (a `swap_out` the backend must perform before the step computes), else dropped;
//! - a prefix hit on a host slot allocates a device block and emits a `swap_in`;
//! - refcounts never underflow: releasing a free, null or unknown block is an error.
//!
//! The backend performs a step's swaps in this order: all `swap_out`s in list order, then all
//! `swap_in`s, then (the scheduler's beam block copies, then) the compute. Slots read by a `swap_in` are not reused until
//! [`BlockPool::begin_step`] of the next step, and blocks written by one are held, so no
//! copy in a step reads what another copy of the same step wrote.

use thiserror::Error;

use super::BlockId;
use super::config::{KvCacheConfig, KvConfigError};
use super::host::HostTier;
use super::lru::LruList;
use super::reuse::{BlockHashFn, Location, ROOT, Registered, ReuseIndex, block_key};

/// A refused pool operation (a caller bug, reported instead of corrupting the counts).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PoolError {
    #[error("block 0 is the reserved null block and is never allocated or released")]
    NullBlock,
    #[error("block {block} is out of range (num_blocks = {num_blocks})")]
    UnknownBlock { block: BlockId, num_blocks: usize },
    #[error("block {block} has refcount 0: release would underflow")]
    NotAllocated { block: BlockId },
}

/// The result of a non-mutating prefix lookup ([`BlockPool::match_prefix`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PrefixMatch {
    /// Leading full blocks that would be reused.
    pub blocks: usize,
    /// Free blocks taking them consumes (hits on free-list blocks and on host slots; hits on
    /// blocks other requests hold cost nothing).
    pub cost: usize,
}

/// What [`BlockPool::take_prefix`] handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixTake {
    /// The reused blocks, in order (each now referenced by the caller).
    pub blocks: Vec<BlockId>,
    /// The serial of the last reused block's entry ([`ROOT`] if none): the parent for the
    /// caller's next registration.
    pub last_serial: u64,
    /// How many of them came back from the host tier.
    pub swapped_in: usize,
}

/// A step's host-tier copies: (device block -> host slot) evictions, then (host slot ->
/// device block) reuse hits.
pub type Swaps = (Vec<(BlockId, usize)>, Vec<(usize, BlockId)>);

/// One hit of a prefix walk.
struct Hit {
    key: u64,
    serial: u64,
    loc: Location,
}

/// The device block pool; see the module invariants.
pub struct BlockPool {
    tpb: usize,
    reuse: bool,
    refcount: Vec<u32>,
    free: LruList,
    block_key: Vec<Option<u64>>,
    index: ReuseIndex,
    host: HostTier,
    swap_out: Vec<(BlockId, usize)>,
    swap_in: Vec<(usize, BlockId)>,
}

impl BlockPool {
    /// A pool with every usable block free, in id order.
    pub fn new(cfg: &KvCacheConfig) -> Result<Self, KvConfigError> {
        Self::with_hasher(cfg, block_key)
    }

    /// [`BlockPool::new`] with another block hash (tests force collisions with it).
    pub(crate) fn with_hasher(
        cfg: &KvCacheConfig,
        hash: BlockHashFn,
    ) -> Result<Self, KvConfigError> {
        cfg.validate()?;
        let n = cfg.num_blocks;
        let mut free = LruList::new(n);
        for b in 1..n as u32 {
            free.push_back(b);
        }
        Ok(BlockPool {
            tpb: cfg.tokens_per_block,
            reuse: cfg.enable_reuse,
            refcount: vec![0; n],
            free,
            block_key: vec![None; n],
            index: ReuseIndex::new(hash),
            host: HostTier::new(cfg.host_cache_blocks),
            swap_out: Vec::new(),
            swap_in: Vec::new(),
        })
    }

    pub fn tokens_per_block(&self) -> usize {
        self.tpb
    }

    /// Whether full blocks are registered and looked up for reuse.
    pub fn reuse_enabled(&self) -> bool {
        self.reuse
    }

    /// Blocks that can be handed out (all but the null block).
    pub fn usable_blocks(&self) -> usize {
        self.refcount.len() - 1
    }

    /// Blocks with refcount 0 (including cached reusable ones).
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Blocks referenced by at least one request.
    pub fn used_blocks(&self) -> usize {
        self.usable_blocks() - self.free_blocks()
    }

    /// The block's refcount (0 for the null block and unknown ids).
    pub fn refcount(&self, b: BlockId) -> u32 {
        self.refcount.get(b as usize).copied().unwrap_or(0)
    }

    /// The free list from first to last evicted (O(free)).
    pub fn free_list(&self) -> Vec<BlockId> {
        self.free.iter().collect()
    }

    /// Reusable entries on device blocks and in host slots.
    pub fn cached_blocks(&self) -> (usize, usize) {
        let host = self.host.occupied();
        (self.index.len() - host, host)
    }

    /// Takes the least recently released free block (refcount becomes 1), evicting any
    /// reuse entry it held (to the host tier when there is one). `None` when none is free.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = self.free.pop_front()?;
        if let Some(key) = self.block_key[b as usize].take() {
            self.evict(b, key);
        }
        self.refcount[b as usize] = 1;
        Some(b)
    }

    /// The entry on device block `b` leaves it: to a host slot (emitting a swap-out) or gone.
    fn evict(&mut self, b: BlockId, key: u64) {
        match self.host.place(key) {
            Some(p) => {
                if let Some(old) = p.evicted {
                    self.index.remove(old);
                }
                self.index.relocate(key, Location::Host(p.slot));
                self.swap_out.push((b, p.slot as usize));
            }
            None => {
                self.index.remove(key);
            }
        }
    }

    /// Adds one reference to a block that is already referenced (a block table sharing it,
    /// e.g. a beam forked from another). Free, null and unknown blocks are refused.
    pub fn retain(&mut self, b: BlockId) -> Result<(), PoolError> {
        if b == 0 {
            return Err(PoolError::NullBlock);
        }
        let num_blocks = self.refcount.len();
        match self.refcount.get_mut(b as usize) {
            None => Err(PoolError::UnknownBlock {
                block: b,
                num_blocks,
            }),
            Some(0) => Err(PoolError::NotAllocated { block: b }),
            Some(rc) => {
                *rc += 1;
                Ok(())
            }
        }
    }

    /// Drops one reference; at 0 the block goes to the back of the free list (keeping its
    /// reuse entry, if any).
    pub fn release(&mut self, b: BlockId) -> Result<(), PoolError> {
        let u = b as usize;
        if b == 0 {
            return Err(PoolError::NullBlock);
        }
        let Some(rc) = self.refcount.get_mut(u) else {
            return Err(PoolError::UnknownBlock {
                block: b,
                num_blocks: self.refcount.len(),
            });
        };
        if *rc == 0 {
            return Err(PoolError::NotAllocated { block: b });
        }
        *rc -= 1;
        if *rc == 0 {
            self.free.push_back(b);
        }
        Ok(())
    }

    /// The cached full blocks at the start of `tokens` (at most `max_blocks`), cut where the
    /// free blocks would not cover their cost.
    fn hits(&self, tokens: &[u32], max_blocks: usize) -> Vec<Hit> {
        let mut out = Vec::new();
        if !self.reuse {
            return out;
        }
        let (mut parent, mut cost) = (ROOT, 0);
        for chunk in tokens.chunks_exact(self.tpb).take(max_blocks) {
            let Some((key, e)) = self.index.lookup(parent, chunk) else {
                break;
            };
            let c = match e.loc {
                Location::Device(b) => usize::from(self.refcount[b as usize] == 0),
                Location::Host(_) => 1,
            };
            if cost + c > self.free.len() {
                break;
            }
            cost += c;
            parent = e.serial;
            out.push(Hit {
                key,
                serial: e.serial,
                loc: e.loc,
            });
        }
        out
    }

    /// How many leading full blocks of `tokens` (at most `max_blocks`) are cached, and what
    /// taking them would cost; [`BlockPool::take_prefix`] then takes exactly these.
    pub fn match_prefix(&self, tokens: &[u32], max_blocks: usize) -> PrefixMatch {
        let hits = self.hits(tokens, max_blocks);
        let cost = hits
            .iter()
            .filter(|h| match h.loc {
                Location::Device(b) => self.refcount[b as usize] == 0,
                Location::Host(_) => true,
            })
            .count();
        PrefixMatch {
            blocks: hits.len(),
            cost,
        }
    }

    /// Takes the cached prefix [`BlockPool::match_prefix`] reports: device hits get a
    /// reference (leaving the free list if they were on it); host hits get a fresh device
    /// block and a swap-in.
    pub fn take_prefix(&mut self, tokens: &[u32], max_blocks: usize) -> PrefixTake {
        let hits = self.hits(tokens, max_blocks);
        let mut blocks = Vec::with_capacity(hits.len());
        let mut from_host = Vec::new();
        for (i, h) in hits.iter().enumerate() {
            match h.loc {
                Location::Device(b) => {
                    self.free.remove(b);
                    self.refcount[b as usize] += 1;
                    blocks.push(b);
                }
                Location::Host(slot) => {
                    // Pinned first, so the evictions below cannot reuse the slot.
                    self.host.take_for_swap_in(slot);
                    from_host.push((i, h.key, slot));
                    blocks.push(0);
                }
            }
        }
        let mut swapped_in = 0;
        for (n, &(i, key, slot)) in from_host.iter().enumerate() {
            // `hits` checked that the free list covers every host hit, so this never
            // fails; if it did, the prefix is cut before this block.
            let Some(b) = self.allocate() else {
                self.abandon_host_hits(&from_host[n..], &mut blocks, i);
                break;
            };
            self.block_key[b as usize] = Some(key);
            self.index.relocate(key, Location::Device(b));
            self.swap_in.push((slot as usize, b));
            blocks[i] = b;
            swapped_in += 1;
        }
        let last_serial = blocks.len().checked_sub(1).map_or(ROOT, |i| hits[i].serial);
        PrefixTake {
            blocks,
            last_serial,
            swapped_in,
        }
    }

    /// Undoes a prefix take from block `cut` on: the pinned host entries are dropped and the
    /// device blocks after the cut released.
    fn abandon_host_hits(
        &mut self,
        pinned: &[(usize, u64, u32)],
        blocks: &mut Vec<BlockId>,
        cut: usize,
    ) {
        for &(_, key, _) in pinned {
            self.index.remove(key);
        }
        for b in blocks.drain(cut..).filter(|&b| b != 0).collect::<Vec<_>>() {
            let _ = self.release(b);
        }
    }

    /// Makes the full block `b` (holding `tokens`, after the entry `parent`) findable; see
    /// [`Registered`]. Only blocks the caller references and that hold no entry yet qualify.
    pub fn register(&mut self, parent: u64, tokens: &[u32], b: BlockId) -> Registered {
        let u = b as usize;
        let eligible = self.reuse && tokens.len() == self.tpb && b != 0 && u < self.refcount.len();
        if !eligible || self.refcount[u] == 0 || self.block_key[u].is_some() {
            return Registered::Skipped;
        }
        let (r, key) = self.index.insert(parent, tokens, Location::Device(b));
        if matches!(r, Registered::New(_)) {
            self.block_key[u] = Some(key);
        }
        r
    }

    /// Starts a step: host slots copied back during the previous step become free.
    pub fn begin_step(&mut self) {
        self.host.release_pending();
    }

    /// The swaps emitted since the last call: (device block -> host slot), (host slot -> device block).
    pub fn take_swaps(&mut self) -> Swaps {
        (
            std::mem::take(&mut self.swap_out),
            std::mem::take(&mut self.swap_in),
        )
    }

    /// Checks the module invariants (O(blocks + entries)).
    pub fn check(&self) -> Result<(), String> {
        if self.refcount[0] != 0 || self.free.contains(0) || self.block_key[0].is_some() {
            return Err("null block 0 is referenced, free-listed or cached".into());
        }
        for b in 1..self.refcount.len() as u32 {
            if (self.refcount[b as usize] == 0) != self.free.contains(b) {
                return Err(format!(
                    "block {b}: refcount {} but on free list = {}",
                    self.refcount[b as usize],
                    self.free.contains(b)
                ));
            }
        }
        let used = self.refcount.iter().filter(|&&r| r > 0).count();
        if used + self.free.len() != self.usable_blocks() {
            return Err(format!(
                "used {used} + free {} != usable {}",
                self.free.len(),
                self.usable_blocks()
            ));
        }
        self.check_entries()?;
        self.host.check()
    }

    /// Entries and back pointers agree.
    fn check_entries(&self) -> Result<(), String> {
        for (&key, e) in self.index.iter() {
            let back = match e.loc {
                Location::Device(b) => self.block_key.get(b as usize).copied().flatten(),
                Location::Host(s) => self.host.key(s),
            };
            if back != Some(key) || e.tokens.len() != self.tpb {
                return Err(format!(
                    "reuse entry {key:#x} at {:?}: back pointer {back:?}, {} tokens",
                    e.loc,
                    e.tokens.len()
                ));
            }
        }
        for (b, key) in self.block_key.iter().enumerate() {
            let Some(k) = key else { continue };
            if self.index.get(*k).map(|e| e.loc) != Some(Location::Device(b as BlockId)) {
                return Err(format!(
                    "block {b} points at reuse entry {k:#x} that is not on it"
                ));
            }
        }
        Ok(())
    }
}
