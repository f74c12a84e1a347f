//! Paged KV cache bookkeeping (host side): block pool, block tables, prefix reuse, host tier,
//! sizing. Pure CPU logic: the backend owns the storage and performs the copies it is told.
//!
//! - [`config`]: [`KvCacheConfig`] and its validation.
//! - [`pool`]: [`BlockPool`]: refcounts, the O(1) LRU free list, reusable blocks, swaps.
//! - [`reuse`]: the prefix index (hash chained over parent and tokens, collision-safe).
//! - [`sizing`]: [`size_kv_cache`], the block count that fits the device memory.
//! - `host` and `lru`: the host tier's slots and the intrusive LRU list (internal).
//!
//! Model: the cache is `num_blocks` blocks of `tokens_per_block` positions; block 0 is the
//! null block (padding target, never handed out). A request's block table is append-only
//! (a beam search reorder gives a beam its parent's table, sharing the full blocks by
//! refcount and copying the partial last one) and maps position `p` to block
//! `table[p / tokens_per_block]`. A block shared between
//! requests is always full, its contents determined by the identical token prefix up to
//! its end; requests only ever write to blocks they alone hold.
//!
//! Invariants: see each module; the pool's are checked by [`BlockPool::check`].

pub mod config;
mod host;
mod lru;
pub mod pool;
pub mod reuse;
pub mod sizing;

#[cfg(test)]
mod pool_tests;

pub use config::{KvCacheConfig, KvConfigError, blocks_for};
pub use pool::{BlockPool, PoolError, PrefixMatch, PrefixTake, Swaps};
pub use reuse::{ROOT, Registered, block_key};
pub use sizing::{KvSizing, KvSizingError, size_kv_cache};

/// A device block id; block 0 is the reserved null block and is never handed out.
pub type BlockId = u32;
