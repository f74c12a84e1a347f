//! The prefix-reuse index: full blocks findable by their token prefix.
//!
//! A full block's identity is (its parent's entry serial, its own tokens); the root block's
//! parent is serial [`ROOT`]. The map key is a 64-bit hash of that pair ([`block_key`]:
//! std's SipHash with fixed keys). Each entry also stores the parent serial and the tokens,
//! and a lookup compares both, so a hash collision can never make two different prefixes
//! share a block: a colliding registration is simply not recorded (its block stays private).
//! Serials are unique for the life of the index (never reused), so a child entry whose
//! parent was dropped can never be matched under a new, different parent.
//!
//! Invariants: one entry per key; an entry is either on a device block or in a host slot
//! ([`Location`]); the pool keeps the back pointers (block -> key, slot -> key) in step.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::BlockId;

/// The parent serial of a sequence's first block.
pub const ROOT: u64 = 0;

/// Hash of a block's identity: the parent entry's serial and the block's tokens.
pub type BlockHashFn = fn(u64, &[u32]) -> u64;

/// The default [`BlockHashFn`]: SipHash-1-3 with std's fixed keys (`DefaultHasher::new()`).
pub fn block_key(parent_serial: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent_serial.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Where a cached block's contents live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Device(BlockId),
    Host(u32),
}

/// One reusable block.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) serial: u64,
    pub(crate) parent: u64,
    pub(crate) tokens: Box<[u32]>,
    pub(crate) loc: Location,
}

/// What registering a block (`BlockPool::register`) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new entry with this serial now lives on the block.
    New(u64),
    /// An identical entry (same parent, same tokens) already exists elsewhere; the chain goes
    /// on with its serial and the block stays private.
    Duplicate(u64),
    /// The key is taken by a different prefix (hash collision); nothing recorded, and the
    /// request's later blocks are not registered either.
    Collision,
    /// Reuse is off, or the block is not eligible; nothing recorded.
    Skipped,
}

/// The keys are already hashes: pass them through.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Key -> entry, plus the serial counter and the hash function.
pub(crate) struct ReuseIndex {
    map: HashMap<u64, Entry, BuildHasherDefault<KeyHasher>>,
    next_serial: u64,
    hash: BlockHashFn,
}

impl ReuseIndex {
    pub(crate) fn new(hash: BlockHashFn) -> Self {
        ReuseIndex {
            map: HashMap::default(),
            next_serial: ROOT + 1,
            hash,
        }
    }

    pub(crate) fn key(&self, parent: u64, tokens: &[u32]) -> u64 {
        (self.hash)(parent, tokens)
    }

    /// The entry for exactly (parent, tokens), with its key; `None` on a miss or a collision.
    pub(crate) fn lookup(&self, parent: u64, tokens: &[u32]) -> Option<(u64, &Entry)> {
        let key = self.key(parent, tokens);
        let e = self.map.get(&key)?;
        (e.parent == parent && *e.tokens == *tokens).then_some((key, e))
    }

    /// Records (parent, tokens) at `loc` unless the key is taken; see [`Registered`].
    /// Returns the key with `New`.
    pub(crate) fn insert(
        &mut self,
        parent: u64,
        tokens: &[u32],
        loc: Location,
    ) -> (Registered, u64) {
        let key = self.key(parent, tokens);
        if let Some(e) = self.map.get(&key) {
            let same = e.parent == parent && *e.tokens == *tokens;
            return (
                if same {
                    Registered::Duplicate(e.serial)
                } else {
                    Registered::Collision
                },
                key,
            );
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.map.insert(
            key,
            Entry {
                serial,
                parent,
                tokens: tokens.into(),
                loc,
            },
        );
        (Registered::New(serial), key)
    }

    pub(crate) fn get(&self, key: u64) -> Option<&Entry> {
        self.map.get(&key)
    }

    /// Moves the entry to `loc`; false if the key is unknown.
    pub(crate) fn relocate(&mut self, key: u64, loc: Location) -> bool {
        self.map.get_mut(&key).map(|e| e.loc = loc).is_some()
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<Entry> {
        self.map.remove(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &Entry)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_parent_and_tokens() {
        let a = block_key(ROOT, &[1, 2, 3]);
        assert_eq!(a, block_key(ROOT, &[1, 2, 3]), "deterministic");
        assert_ne!(a, block_key(ROOT, &[1, 2, 4]));
        assert_ne!(a, block_key(7, &[1, 2, 3]));
    }

    #[test]
    fn colliding_keys_never_match_different_tokens() {
        let mut ix = ReuseIndex::new(|_, _| 42);
        let (r, _) = ix.insert(ROOT, &[1, 2], Location::Device(1));
        let s = match r {
            Registered::New(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(ix.lookup(ROOT, &[1, 2]).map(|(_, e)| e.serial), Some(s));
        assert!(
            ix.lookup(ROOT, &[9, 9]).is_none(),
            "same hash, different tokens: miss"
        );
        assert!(
            ix.lookup(s, &[1, 2]).is_none(),
            "same hash and tokens, different parent: miss"
        );
        assert_eq!(
            ix.insert(ROOT, &[9, 9], Location::Device(2)).0,
            Registered::Collision
        );
        assert_eq!(
            ix.insert(ROOT, &[1, 2], Location::Device(3)).0,
            Registered::Duplicate(s)
        );
        assert_eq!(ix.len(), 1);
    }
}
