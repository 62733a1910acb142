//! Per-guest quotas: what the memory manager holds is shared between its guests so that no guest
//! (or its VMM) can take what another was promised.
//!
//! What is shared, and what each guest may have of it:
//! - **RAM from the pool** (the manifest's `untyped` of the memory manager). A guest's need is its
//!   RAM (`GuestInfo::ram_size` from the boot-info page, which is the manifest's `memory`): so
//!   many 2 MiB blocks and 4 KiB pages ([`Need::of`]). A guest whose RAM is at IPA = PA has its
//!   own untyped and takes nothing from the pool.
//! - **Frames**: the memory manager's table of frames ([`MAX_FRAMES`](crate::policy::MAX_FRAMES))
//!   and the two capability slots each frame takes.
//!
//! When everything fits, each guest's quota is its need; otherwise the capacity is split
//! max-min fairly ([`fair_split`]): equal shares, a guest needing less than its share gets its
//! need, and what it leaves is shared among the others. A guest beyond its quota is refused with
//! `MemError::Quota`; nothing another guest does can make it fail within its quota.
//!
//! That guarantee needs the pool's memory accounted exactly, and an untyped hands out memory at
//! its watermark, aligned up to the object's size: a page retyped between two blocks would waste
//! most of 2 MiB, and a guest could fault in an order that wastes the pool for the others. So
//! blocks and pages never share memory ([`Pool`]): at start the memory manager learns each pool
//! untyped's size (`Identify`), carves one child untyped for every guest's pages from the bottom
//! of the smallest piece that holds it (its record takes that piece's top page), and retypes
//! blocks only above it and from the other pieces, so the capacities are exact.

use capvisor_ipc::abi::KernelError;

use capvisor_ipc::cap::{Cap, Frame, Untyped};
use capvisor_rt::kernel::Kernel;

use crate::policy::{BLOCK, FrameSize, Guest, MAX_GUESTS, PAGE};

/// The most untyped pieces the pool is made of (a boot-info page lists at most this many).
pub const MAX_PIECES: usize = capvisor_ipc::bootinfo::MAX_UNTYPED;

/// What one guest's RAM takes when all of it is in use: 2 MiB blocks for the 2 MiB regions wholly
/// inside RAM, 4 KiB pages for the rest (`Guest::region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need {
    /// 2 MiB frames.
    pub blocks: u64,
    /// 4 KiB frames.
    pub pages: u64,
}

impl Need {
    /// The need of RAM `[base, base + size)`.
    #[must_use]
    pub const fn of_range(base: u64, size: u64) -> Self {
        let end = base.saturating_add(size);
        let first = base.next_multiple_of(BLOCK);
        let last = end - end % BLOCK;
        if last > first {
            Self {
                blocks: (last - first) / BLOCK,
                pages: pages(base, first) + pages(last, end),
            }
        } else {
            Self {
                blocks: 0,
                pages: pages(base, end),
            }
        }
    }

    /// The need of `guest`'s RAM.
    #[must_use]
    pub const fn of(guest: &Guest) -> Self {
        Self::of_range(guest.ram_base, guest.ram_size)
    }

    /// Frames in all.
    #[must_use]
    pub const fn frames(self) -> u64 {
        self.blocks + self.pages
    }
}

/// Pages that cover `[start, end)`.
const fn pages(start: u64, end: u64) -> u64 {
    if end <= start {
        return 0;
    }
    (end.next_multiple_of(PAGE) - (start - start % PAGE)) / PAGE
}

/// The max-min fair split of `capacity` between `needs`: every need when they all fit; otherwise
/// in order of need, each gets the smaller of its need and an equal share of what is left. No
/// share exceeds its need, the shares never sum to more than `capacity`, and a need no larger
/// than `capacity / needs.len()` is always met.
#[must_use]
pub fn fair_split(needs: &[u64], capacity: u64) -> heapless::Vec<u64, MAX_GUESTS> {
    let mut shares: heapless::Vec<u64, MAX_GUESTS> = needs.iter().map(|_| 0).collect();
    let mut order: heapless::Vec<usize, MAX_GUESTS> = (0..shares.len()).collect();
    order.sort_unstable_by_key(|&index| needs[index]);
    let mut left = capacity;
    for (served, &index) in order.iter().enumerate() {
        let share = left / (order.len() - served) as u64;
        shares[index] = needs[index].min(share);
        left -= shares[index];
    }
    shares
}

/// A guest's quota, or what it uses of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// 2 MiB frames from the pool.
    pub blocks: u64,
    /// 4 KiB frames from the pool.
    pub pages: u64,
    /// Frames of any size and origin (the frame table and capability slots).
    pub frames: u64,
}

/// One piece of the pool: a pool untyped, and the blocks it can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    slot: Cap<Untyped>,
    /// Blocks it can still make.
    blocks: u64,
}

/// The pool, split into untyped for blocks and one for pages.
#[derive(Debug)]
pub struct Pool {
    pieces: heapless::Vec<Piece, MAX_PIECES>,
    /// The piece blocks come from now (those before it have none left).
    current: usize,
    /// The pages' untyped and the pages it can still make.
    pages: Option<(Cap<Untyped>, u64)>,
    block_capacity: u64,
    page_capacity: u64,
}

impl Pool {
    /// Learns the size of each of `untyped` (the memory manager's pool) and carves from them an
    /// untyped for `pages` 4 KiB pages (rounded up to a power of two), from the smallest piece
    /// that holds it and its one-page record; blocks come from the rest.
    pub fn carve(kernel: &mut impl Kernel, untyped: &[Cap<Untyped>], pages: u64) -> Self {
        let mut sized: heapless::Vec<(Cap<Untyped>, u64), MAX_PIECES> = untyped
            .iter()
            .filter_map(|&slot| kernel.untyped_size(slot).ok().map(|size| (slot, size)))
            .collect();
        sized.sort_unstable_by_key(|&(_, size)| size);
        // (piece, the pages' untyped, its bytes)
        let mut page_pool = None;
        if pages > 0 && !sized.is_empty() {
            let wanted = (pages * PAGE).next_power_of_two();
            // The smallest piece with room for it and its record; else as much as the largest
            // piece holds beside its record.
            let (at, bytes) = match sized.iter().position(|&(_, size)| size >= wanted + PAGE) {
                Some(at) => (at, wanted),
                None => {
                    let at = sized.len() - 1;
                    let room = sized[at].1.saturating_sub(PAGE);
                    (at, if room == 0 { 0 } else { 1 << room.ilog2() })
                }
            };
            if bytes >= PAGE
                && let Ok(slot) = kernel.retype::<Untyped>(sized[at].0, bytes.trailing_zeros())
            {
                page_pool = Some((at, slot, bytes));
            }
        }
        let mut pieces = heapless::Vec::new();
        for (index, &(slot, size)) in sized.iter().enumerate() {
            let (used, top) = match page_pool {
                // Blocks start at the next 2 MiB boundary after the pages' untyped, and end
                // below its record, at the piece's top.
                Some((at, _, bytes)) if at == index => (bytes.next_multiple_of(BLOCK), size - PAGE),
                _ => (0, size),
            };
            let blocks = top.saturating_sub(used) / BLOCK;
            let _ = pieces.push(Piece { slot, blocks });
        }
        let pages = page_pool.map(|(_, slot, bytes)| (slot, bytes / PAGE));
        Self {
            block_capacity: pieces.iter().map(|p| p.blocks).sum(),
            page_capacity: pages.map_or(0, |(_, count)| count),
            pieces,
            current: 0,
            pages,
        }
    }

    /// Blocks the pool held after carving.
    #[must_use]
    pub const fn block_capacity(&self) -> u64 {
        self.block_capacity
    }

    /// Pages the pool held after carving.
    #[must_use]
    pub const fn page_capacity(&self) -> u64 {
        self.page_capacity
    }

    /// Retypes a frame of `size` from the pool into a free slot.
    ///
    /// # Errors
    /// `NotEnoughMemory` when the pool has none left (a quota bug: quotas never sum to more than
    /// the capacity), or the kernel's refusal.
    pub fn take(
        &mut self,
        kernel: &mut impl Kernel,
        size: FrameSize,
    ) -> Result<Cap<Frame>, KernelError> {
        match size {
            FrameSize::Page4K => {
                let (slot, left) = self.pages.as_mut().ok_or(KernelError::NotEnoughMemory)?;
                if *left == 0 {
                    return Err(KernelError::NotEnoughMemory);
                }
                let frame = kernel.retype(*slot, size.bits() as u32)?;
                *left -= 1;
                Ok(frame)
            }
            FrameSize::Block2M => {
                // Pieces are used up in order: the first with blocks left is the current one.
                while self.pieces.get(self.current).is_some_and(|p| p.blocks == 0) {
                    self.current += 1;
                }
                let piece = self
                    .pieces
                    .get_mut(self.current)
                    .ok_or(KernelError::NotEnoughMemory)?;
                let frame = kernel.retype(piece.slot, size.bits() as u32)?;
                piece.blocks -= 1;
                Ok(frame)
            }
        }
    }
}

/// Every guest's quota: its need of the pool (none for RAM at IPA = PA) split over the pool's
/// capacity, and its frames split over `frames` (the frame table, or half the free slots).
#[must_use]
pub fn quotas(guests: &[Guest], pool: &Pool, frames: u64) -> heapless::Vec<Quota, MAX_GUESTS> {
    let needs: heapless::Vec<Need, MAX_GUESTS> = guests.iter().map(Need::of).collect();
    let from_pool = |guest: &Guest, count: u64| {
        if guest.identity_untyped.is_none() {
            count
        } else {
            0
        }
    };
    let blocks: heapless::Vec<u64, MAX_GUESTS> = guests
        .iter()
        .zip(&needs)
        .map(|(g, n)| from_pool(g, n.blocks))
        .collect();
    let pages: heapless::Vec<u64, MAX_GUESTS> = guests
        .iter()
        .zip(&needs)
        .map(|(g, n)| from_pool(g, n.pages))
        .collect();
    let all: heapless::Vec<u64, MAX_GUESTS> = needs.iter().map(|n| n.frames()).collect();
    let blocks = fair_split(&blocks, pool.block_capacity());
    let pages = fair_split(&pages, pool.page_capacity());
    let all = fair_split(&all, frames);
    (0..guests.len())
        .map(|i| Quota {
            blocks: blocks[i],
            pages: pages[i],
            frames: all[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn needs_count_blocks_inside_ram_and_pages_around_them() {
        let ram = 0x4000_0000;
        assert_eq!(
            Need::of_range(ram, 16 << 20),
            Need {
                blocks: 8,
                pages: 0
            }
        );
        assert_eq!(
            Need::of_range(ram, BLOCK + 2 * PAGE),
            Need {
                blocks: 1,
                pages: 2
            }
        );
        // Pages before the first 2 MiB boundary and after the last, and a partial page.
        assert_eq!(
            Need::of_range(ram + (1 << 20), (4 << 20) + 0x800),
            Need {
                blocks: 1,
                pages: 256 + 257
            }
        );
        assert_eq!(
            Need::of_range(ram + PAGE, PAGE),
            Need {
                blocks: 0,
                pages: 1
            }
        );
        assert_eq!(Need::of_range(ram, 0), Need::default());
    }

    #[test]
    fn a_fair_split_meets_every_need_that_fits_and_shares_the_rest() {
        assert_eq!(fair_split(&[8, 4], 12), [8, 4]);
        assert_eq!(fair_split(&[16, 4], 12), [8, 4]);
        assert_eq!(fair_split(&[16, 16], 12), [6, 6]);
        assert_eq!(fair_split(&[256, 8], 192), [184, 8]);
        assert_eq!(fair_split(&[5, 0, 9], 7), [3, 0, 4]);
        assert!(fair_split(&[], 7).is_empty());
    }

    proptest! {
        #[test]
        fn a_fair_split_is_max_min_fair(
            needs in prop::collection::vec(0..1000u64, 0..=MAX_GUESTS),
            capacity in 0..3000u64,
        ) {
            let shares = fair_split(&needs, capacity);
            prop_assert_eq!(shares.len(), needs.len());
            prop_assert!(shares.iter().sum::<u64>() <= capacity);
            for (share, need) in shares.iter().zip(&needs) {
                prop_assert!(share <= need);
            }
            if needs.iter().sum::<u64>() <= capacity {
                prop_assert_eq!(&shares[..], &needs[..]);
            } else if !needs.is_empty() {
                // Nobody below its need gets less than anyone else (max-min), and no guest's
                // guaranteed share (an equal part of the capacity) is ever withheld.
                let equal = capacity / needs.len() as u64;
                let most = *shares.iter().max().unwrap_or(&0);
                for (share, need) in shares.iter().zip(&needs) {
                    prop_assert!(*share >= (*need).min(equal));
                    if share < need {
                        prop_assert!(most - share <= 1 || *share >= most);
                    }
                }
            }
        }
    }
}
