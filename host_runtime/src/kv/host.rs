//! The host tier: a fixed number of host-memory slots that reusable blocks move to when an
//! allocation evicts them from the device free list, so a later prefix hit can copy them
//! back instead of recomputing.
//!
//! Slots are in one of three states: free; occupied (holding an entry's key, in LRU order,
//! evictable); pending (just copied back to the device this step: the backend still reads
//! it, so it is not reused until [`HostTier::release_pending`] runs at the next step).
//!
//! Invariants: every slot is in exactly one state; occupied slots are exactly the LRU
//! list's members and hold a key; free and pending slots hold none.

use super::lru::LruList;

pub(crate) struct HostTier {
    keys: Vec<Option<u64>>,
    lru: LruList,
    free: Vec<u32>,
    pending: Vec<u32>,
}

/// Where [`HostTier::place`] put an entry, and what it evicted to make room.
pub(crate) struct Placed {
    pub(crate) slot: u32,
    pub(crate) evicted: Option<u64>,
}

impl HostTier {
    /// `slots` fits `u32` (validated by the config).
    pub(crate) fn new(slots: usize) -> Self {
        HostTier {
            keys: vec![None; slots],
            lru: LruList::new(slots),
            free: (0..slots as u32).rev().collect(),
            pending: Vec::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn occupied(&self) -> usize {
        self.lru.len()
    }

    /// Stores `key` in a free slot, else in the least recently used occupied one (returning
    /// the key it evicted); `None` when every slot is pending (or there are none).
    pub(crate) fn place(&mut self, key: u64) -> Option<Placed> {
        let (slot, evicted) = match self.free.pop() {
            Some(s) => (s, None),
            None => {
                let s = self.lru.pop_front()?;
                (s, self.keys[s as usize].take())
            }
        };
        self.keys[slot as usize] = Some(key);
        self.lru.push_back(slot);
        Some(Placed { slot, evicted })
    }

    /// Takes the key out of an occupied slot and marks the slot pending (being copied back).
    pub(crate) fn take_for_swap_in(&mut self, slot: u32) -> Option<u64> {
        if !self.lru.remove(slot) {
            return None;
        }
        self.pending.push(slot);
        self.keys[slot as usize].take()
    }

    /// Frees the slots copied back during the previous step.
    pub(crate) fn release_pending(&mut self) {
        self.free.append(&mut self.pending);
    }

    pub(crate) fn key(&self, slot: u32) -> Option<u64> {
        self.keys.get(slot as usize).copied().flatten()
    }

    /// Checks the module invariants.
    pub(crate) fn check(&self) -> Result<(), String> {
        let n = self.capacity();
        let mut state = vec![0u8; n];
        for (what, slots) in [("free", &self.free), ("pending", &self.pending)] {
            for &s in slots.iter() {
                let u = s as usize;
                if u >= n || state[u] != 0 || self.keys[u].is_some() {
                    return Err(format!(
                        "host slot {s} ({what}) out of range, listed twice or holding a key"
                    ));
                }
                state[u] = 1;
            }
        }
        for s in self.lru.iter() {
            let u = s as usize;
            if state[u] != 0 || self.keys[u].is_none() {
                return Err(format!(
                    "host slot {s} occupied but also free/pending or keyless"
                ));
            }
            state[u] = 1;
        }
        match state.iter().filter(|&&x| x == 0).count() {
            0 => Ok(()),
            lost => Err(format!("{lost} host slots in no state (capacity {n})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_eviction_and_pending() {
        let mut h = HostTier::new(2);
        let a = h.place(10).unwrap();
        let b = h.place(11).unwrap();
        assert!(a.evicted.is_none() && b.evicted.is_none());
        let c = h.place(12).unwrap();
        assert_eq!(
            (c.slot, c.evicted),
            (a.slot, Some(10)),
            "the oldest slot is evicted"
        );
        assert_eq!(h.take_for_swap_in(b.slot), Some(11));
        assert_eq!(h.take_for_swap_in(b.slot), None);
        // b's slot is pending: the only evictable slot is c's.
        let d = h.place(13).unwrap();
        assert_eq!((d.slot, d.evicted), (c.slot, Some(12)));
        h.check().unwrap();
        h.release_pending();
        let e = h.place(14).unwrap();
        assert_eq!((e.slot, e.evicted), (b.slot, None));
        h.check().unwrap();
    }

    #[test]
    fn all_pending_means_no_room() {
        let mut h = HostTier::new(1);
        let a = h.place(1).unwrap();
        h.take_for_swap_in(a.slot);
        assert!(h.place(2).is_none());
        assert!(HostTier::new(0).place(3).is_none());
    }
}
