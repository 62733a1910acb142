//! Free capability slots, as a bitmap: filled by a scan of the service's CNode, taken lowest
//! first.

/// The most slots a pool tracks (the root's CNode has 1024; a further service's 512).
pub const POOL_SLOTS: u64 = 1024;

/// A set of free slots of the service's own CNode.
#[derive(Debug, Clone)]
pub struct SlotPool {
    bits: [u64; (POOL_SLOTS / 64) as usize],
}

impl Default for SlotPool {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotPool {
    /// No free slot.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            bits: [0; (POOL_SLOTS / 64) as usize],
        }
    }

    /// Marks `slot` free (slots beyond [`POOL_SLOTS`] are ignored; slot 0 is never used).
    pub fn give(&mut self, slot: u64) {
        if slot != 0 && slot < POOL_SLOTS {
            self.bits[(slot / 64) as usize] |= 1 << (slot % 64);
        }
    }

    /// Whether `slot` is free.
    #[must_use]
    pub fn contains(&self, slot: u64) -> bool {
        slot < POOL_SLOTS && self.bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    /// Takes the lowest free slot.
    pub fn take(&mut self) -> Option<u64> {
        let (word, bits) = self.bits.iter_mut().enumerate().find(|(_, b)| **b != 0)?;
        let bit = u64::from(bits.trailing_zeros());
        *bits &= !(1 << bit);
        Some(word as u64 * 64 + bit)
    }

    /// Takes up to `count` free slots, lowest first, into a new pool (a region of its own).
    pub fn split(&mut self, count: usize) -> Self {
        let mut region = Self::new();
        for _ in 0..count {
            match self.take() {
                Some(slot) => region.give(slot),
                None => break,
            }
        }
        region
    }

    /// How many slots are free.
    #[must_use]
    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// The free slots, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(word, &bits)| {
            let mut rest = bits;
            core::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = u64::from(rest.trailing_zeros());
                rest &= rest - 1;
                Some(word as u64 * 64 + bit)
            })
        })
    }

    /// The `n`th free slot, in increasing order (`None` beyond [`SlotPool::count`]).
    #[must_use]
    pub fn nth(&self, mut n: usize) -> Option<u64> {
        for (word, bits) in self.bits.iter().enumerate() {
            let ones = bits.count_ones() as usize;
            if n < ones {
                let mut rest = *bits;
                for _ in 0..n {
                    rest &= rest - 1;
                }
                return Some(word as u64 * 64 + u64::from(rest.trailing_zeros()));
            }
            n -= ones;
        }
        None
    }
}

/// A short list of slots, in the order found.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotList {
    items: [u64; 16],
    len: usize,
}

impl SlotList {
    /// Adds `slot`; a full list keeps its first 16.
    pub fn push(&mut self, slot: u64) {
        if let Some(item) = self.items.get_mut(self.len) {
            *item = slot;
            self.len += 1;
        }
    }

    /// The first slot, if any.
    #[must_use]
    pub fn first(&self) -> Option<u64> {
        self.as_slice().first().copied()
    }

    /// The slots, in the order added.
    #[must_use]
    pub fn as_slice(&self) -> &[u64] {
        &self.items[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_lowest_first_and_ignores_slot_zero_and_out_of_range() {
        let mut pool = SlotPool::new();
        for slot in [0, 700, 5, 64, 63, POOL_SLOTS, u64::MAX] {
            pool.give(slot);
        }
        assert_eq!(pool.count(), 4);
        assert!(pool.contains(64) && !pool.contains(0) && !pool.contains(POOL_SLOTS));
        assert_eq!(pool.nth(0), Some(5));
        assert_eq!(pool.nth(2), Some(64));
        assert_eq!(pool.nth(3), Some(700));
        assert_eq!(pool.nth(4), None);
        let listed: std::vec::Vec<_> = pool.iter().collect();
        assert_eq!(listed, [5, 63, 64, 700]);
        let taken: std::vec::Vec<_> = core::iter::from_fn(|| pool.take()).collect();
        assert_eq!(taken, [5, 63, 64, 700]);
        assert_eq!(pool.count(), 0);
    }

    #[test]
    fn split_moves_the_lowest_slots() {
        let mut pool = SlotPool::new();
        for slot in 10..20 {
            pool.give(slot);
        }
        let region = pool.split(4);
        assert_eq!(region.count(), 4);
        assert!((10..14).all(|s| region.contains(s) && !pool.contains(s)));
        assert_eq!(pool.count(), 6);
        assert_eq!(pool.clone().split(100).count(), 6);
    }

    #[test]
    fn lists_keep_their_first_sixteen() {
        let mut list = SlotList::default();
        assert_eq!(list.first(), None);
        for slot in 1..=20 {
            list.push(slot);
        }
        assert_eq!(list.first(), Some(1));
        assert_eq!(list.as_slice().len(), 16);
        assert_eq!(list.as_slice()[15], 16);
    }
}
