//! The physical memory map at boot: RAM from the device tree minus what is in use (the kernel
//! image with its payload, the device tree), and page allocation from what is left.
//!
//! Invariant: the free ranges are disjoint, page-aligned, and lie inside RAM; an allocation
//! never returns a page that overlaps a reserved range.

use heapless::Vec;

/// The most free ranges tracked.
pub const MAX_RANGES: usize = 16;
const PAGE: u64 = 4096;

/// A physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Free physical memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryMap {
    free: Vec<Range, MAX_RANGES>,
}

impl MemoryMap {
    /// A map of `ram`, page-aligned inwards; ranges beyond [`MAX_RANGES`] are ignored.
    #[must_use]
    pub fn new(ram: &[Range]) -> Self {
        let mut free = Vec::new();
        for r in ram {
            let start = r.start.div_ceil(PAGE) * PAGE;
            let end = r.end / PAGE * PAGE;
            if start < end && free.push(Range { start, end }).is_err() {
                break;
            }
        }
        Self { free }
    }

    /// A map with no free memory.
    #[must_use]
    pub const fn empty() -> Self {
        Self { free: Vec::new() }
    }

    /// Whether `[start, end)` lies inside one free range.
    #[must_use]
    pub fn contains(&self, start: u64, end: u64) -> bool {
        self.free.iter().any(|r| r.start <= start && end <= r.end)
    }

    /// Takes `reserved` (aligned outwards to pages) out of the free ranges.
    pub fn reserve(&mut self, reserved: Range) {
        let cut_start = reserved.start / PAGE * PAGE;
        let cut_end = reserved.end.div_ceil(PAGE) * PAGE;
        let mut next: Vec<Range, MAX_RANGES> = Vec::new();
        for r in &self.free {
            if cut_end <= r.start || cut_start >= r.end {
                let _ = next.push(*r);
                continue;
            }
            if r.start < cut_start {
                let _ = next.push(Range {
                    start: r.start,
                    end: cut_start,
                });
            }
            if cut_end < r.end {
                let _ = next.push(Range {
                    start: cut_end,
                    end: r.end,
                });
            }
        }
        self.free = next;
    }

    /// Allocates `count` contiguous pages aligned to `align` bytes (a power of two, at least a
    /// page), from the lowest free range that fits.
    pub fn alloc(&mut self, count: u64, align: u64) -> Option<u64> {
        let align = align.max(PAGE);
        if !align.is_power_of_two() || count == 0 {
            return None;
        }
        let size = count.checked_mul(PAGE)?;
        for i in 0..self.free.len() {
            let r = self.free[i];
            let start = r.start.checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(size)?;
            if end <= r.end {
                self.reserve(Range { start, end });
                return Some(start);
            }
        }
        None
    }

    /// The free ranges.
    #[must_use]
    pub fn free(&self) -> &[Range] {
        &self.free
    }

    /// Free bytes in all.
    #[must_use]
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.end - r.start).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[test]
    fn reserve_splits_and_alloc_avoids() {
        let mut map = MemoryMap::new(&[r(0x4000_0000, 0x8000_0000)]);
        map.reserve(r(0x4020_0000, 0x4030_0123));
        map.reserve(r(0x4800_0000, 0x4810_0000));
        assert_eq!(
            map.free(),
            &[
                r(0x4000_0000, 0x4020_0000),
                r(0x4030_1000, 0x4800_0000),
                r(0x4810_0000, 0x8000_0000)
            ]
        );
        let big = map.alloc(512, 2 << 20).unwrap();
        assert_eq!(big, 0x4000_0000);
        let next = map.alloc(1, 4096).unwrap();
        assert_eq!(next, 0x4030_1000);
        assert_eq!(map.alloc(0, 4096), None);
        assert_eq!(map.alloc(1, 3 * 4096), None, "not a power of two");
    }

    #[test]
    fn exhaustion() {
        let mut map = MemoryMap::new(&[r(0x1000, 0x3000)]);
        assert!(map.alloc(1, 4096).is_some());
        assert!(map.alloc(1, 4096).is_some());
        assert_eq!(map.alloc(1, 4096), None);
        assert_eq!(map.free_bytes(), 0);
    }
}
