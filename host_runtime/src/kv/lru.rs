//! An intrusive doubly-linked list over the indices `0..n`, stored in two `Vec`s: O(1)
//! push to the back, pop from the front, removal of any member and membership test.
//!
//! Used as the LRU order of the device free list (block ids) and of the host tier's
//! occupied slots: the front is the least recently released entry, evicted first.
//!
//! Invariants: an index is linked at most once; `len` equals the number of linked indices;
//! `prev`/`next` of unlinked indices are [`NIL`].

/// Marks "no neighbour" / "not linked".
const NIL: u32 = u32::MAX;

/// The list. Indices out of range are never linked: operations on them are no-ops that
/// report failure.
#[derive(Clone, Debug)]
pub(crate) struct LruList {
    prev: Vec<u32>,
    next: Vec<u32>,
    linked: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl LruList {
    /// An empty list over the indices `0..n` (`n` must fit in `u32`; the caller validated it).
    pub(crate) fn new(n: usize) -> Self {
        LruList {
            prev: vec![NIL; n],
            next: vec![NIL; n],
            linked: vec![false; n],
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, i: u32) -> bool {
        self.linked.get(i as usize).copied().unwrap_or(false)
    }

    /// Appends `i` as the most recently used entry. Returns false if `i` is out of range or
    /// already linked.
    pub(crate) fn push_back(&mut self, i: u32) -> bool {
        let u = i as usize;
        if u >= self.linked.len() || self.linked[u] {
            return false;
        }
        self.linked[u] = true;
        self.prev[u] = self.tail;
        self.next[u] = NIL;
        if self.tail == NIL {
            self.head = i;
        } else {
            self.next[self.tail as usize] = i;
        }
        self.tail = i;
        self.len += 1;
        true
    }

    /// The least recently used entry, without removing it.
    pub(crate) fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Removes and returns the least recently used entry.
    pub(crate) fn pop_front(&mut self) -> Option<u32> {
        let h = self.front()?;
        self.remove(h);
        Some(h)
    }

    /// Unlinks `i`. Returns false if it was not linked.
    pub(crate) fn remove(&mut self, i: u32) -> bool {
        if !self.contains(i) {
            return false;
        }
        let u = i as usize;
        let (p, n) = (self.prev[u], self.next[u]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[u] = NIL;
        self.next[u] = NIL;
        self.linked[u] = false;
        self.len -= 1;
        true
    }

    /// The members from least to most recently used (for checks and tests; O(len)).
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.head;
        let mut left = self.len;
        std::iter::from_fn(move || {
            if cur == NIL || left == 0 {
                return None;
            }
            let c = cur;
            cur = self.next[c as usize];
            left -= 1;
            Some(c)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_and_removal() {
        let mut l = LruList::new(5);
        for i in [3, 1, 4, 0] {
            assert!(l.push_back(i));
        }
        assert!(!l.push_back(1), "double link refused");
        assert!(!l.push_back(9), "out of range refused");
        assert!(l.remove(4));
        assert!(!l.remove(4));
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![3, 1, 0]);
        assert_eq!(l.pop_front(), Some(3));
        assert!(l.push_back(3));
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![1, 0, 3]);
        assert_eq!(l.len(), 3);
        while l.pop_front().is_some() {}
        assert_eq!(l.len(), 0);
        assert_eq!(l.front(), None);
        assert!(!l.contains(1));
    }
}
