//! Stage-2 address spaces: the translation tables of a service or a VM, tagged by a VMID, with TLB
//! maintenance that always targets that VMID.
//!
//! Tables are 4K-granule, walked from the start level VTCR_EL2 gives (`capvisor_kernel::stage2`
//! has the encodings). Table pages come from a [`TablePages`] source — a space's own table
//! budget ([`TableBudget`], memory its creator paid for) — zeroed, and are reached through the
//! kernel's identity map. Writes are made visible to the table walker with DSB ISHST (the
//! walks are inner-shareable write-back, Arm ARM D8.2.6, so no cache maintenance is needed).
//! Removing valid entries is break-before-make (Arm ARM DDI 0487 L.a, D8.17.1, R_DDMVT): every
//! entry of the range invalid first, one DSB ISHST, then the TLB invalidation for the space's
//! VMID (`tlb::invalidate_ipa_pages`: TLBI IPAS2E1IS per page, then TLBI VMALLE1IS for combined
//! stage-1+2 entries, D8.17.6.1), or of the whole VMID for a long range.

use super::tlb;
use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::stage2::{self, BLOCK, OA_MASK, PAGE, TABLE};
use core::arch::asm;

const ENTRIES: usize = 512;
/// A level-2 block (4K granule).
pub const BLOCK_SIZE: u64 = 2 << 20;
/// The most pages [`AddressSpace::invalidate_range`] invalidates one by one; a larger range
/// invalidates the whole VMID (one instruction), so the work stays bounded.
pub const TLBI_RANGE_PAGES: u64 = 64;

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The IPA is outside the address space's input size, or not page-aligned.
    BadAddress,
    /// A valid mapping is already there.
    AlreadyMapped,
    /// No memory for a translation table.
    OutOfMemory,
}

/// A stage-2 translation: root table and VMID.
#[derive(Debug)]
pub struct AddressSpace {
    root: u64,
    vmid: u16,
    ipa_bits: u32,
}

fn table(pa: u64) -> *mut u64 {
    pa as *mut u64
}

/// Where table pages come from: the boot memory map, or the glue's pool of reusable pages.
pub trait TablePages {
    /// A free 4 KiB page of kernel-mapped RAM that nothing else uses.
    fn take_page(&mut self) -> Option<u64>;
}

impl TablePages for MemoryMap {
    fn take_page(&mut self) -> Option<u64> {
        self.alloc(1, 4096)
    }
}

/// The unused pages of a space's table budget (`[next, end)` of its own memory), taken one at a
/// time; [`TableBudget::commit`] records what was taken.
pub struct TableBudget {
    next: u64,
    end: u64,
}

impl TableBudget {
    /// The budget `space` has left.
    #[must_use]
    pub fn of(space: &capvisor_kernel::object::SpaceGlue) -> Self {
        Self {
            next: space.next_table,
            end: space.end,
        }
    }

    /// Records in `space` the pages taken.
    pub fn commit(&self, space: &mut capvisor_kernel::object::SpaceGlue) {
        space.next_table = self.next;
    }
}

impl TablePages for TableBudget {
    fn take_page(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            let page = self.next;
            self.next += 4096;
            page
        })
    }
}

fn zeroed_page(memory: &mut impl TablePages) -> Result<u64, MapError> {
    let pa = memory.take_page().ok_or(MapError::OutOfMemory)?;
    // SAFETY: the page was just taken from a space's own table budget (or the boot memory map),
    // so nothing else uses it; RAM is identity mapped read/write in the kernel's map.
    unsafe { core::ptr::write_bytes(table(pa), 0, ENTRIES) };
    Ok(pa)
}

impl AddressSpace {
    /// A zeroed root table from `memory`.
    ///
    /// # Errors
    /// [`MapError::OutOfMemory`] when `memory` has no page.
    pub fn new_root(memory: &mut impl TablePages) -> Result<u64, MapError> {
        zeroed_page(memory)
    }

    /// The tables rooted at `root` (made by [`AddressSpace::new_root`]), tagged `vmid`.
    #[must_use]
    pub const fn from_root(root: u64, vmid: u16, ipa_bits: u32) -> Self {
        Self {
            root,
            vmid,
            ipa_bits,
        }
    }

    /// VTTBR_EL2 for this space: its root table and VMID.
    #[must_use]
    pub fn vttbr(&self) -> u64 {
        stage2::vttbr(self.root, self.vmid)
    }

    /// The entry for `ipa` at `level` (2: a 2 MiB block, 3: a page), creating tables on the way
    /// when `memory` is given. Without `memory`, a block found above `level` is returned with its
    /// level (a lookup); with it, a block in the way is [`MapError::AlreadyMapped`].
    fn entry<P: TablePages>(
        &mut self,
        ipa: u64,
        level: u8,
        mut memory: Option<&mut P>,
    ) -> Result<(*mut u64, u8), MapError> {
        if ipa >> self.ipa_bits != 0 || ipa & 0xfff != 0 {
            return Err(MapError::BadAddress);
        }
        let mut current = self.root;
        for walk in stage2::start_level(self.ipa_bits)..level {
            // SAFETY: `current` is a table page of this space (the root, or a table descriptor's
            // output address that we wrote); the index is below 512.
            let entry = unsafe { table(current).add(stage2::table_index(ipa, walk)) };
            // SAFETY: `entry` points into a table page owned by this space.
            let value = unsafe { entry.read_volatile() };
            current = match value & 3 {
                TABLE => value & OA_MASK,
                BLOCK if memory.is_some() => return Err(MapError::AlreadyMapped),
                BLOCK => return Ok((entry, walk)),
                _ => {
                    let memory = memory.as_deref_mut().ok_or(MapError::BadAddress)?;
                    let next = zeroed_page(memory)?;
                    // SAFETY: as above; the new table is zeroed (all invalid) before it is linked.
                    unsafe { entry.write_volatile(next | TABLE) };
                    next
                }
            };
        }
        // SAFETY: `current` is a table of this space at `level`.
        Ok((
            unsafe { table(current).add(stage2::table_index(ipa, level)) },
            level,
        ))
    }

    /// Writes a leaf at `level` (2: block, 3: page) into an invalid entry.
    // Inlined, as LLVM chose before the boot builder left the kernel: out of line it costs the
    // guest exit and interrupt paths instructions (`docs/benchmarks.md`, issue 15).
    #[inline]
    fn map_leaf(
        &mut self,
        (ipa, pa): (u64, u64),
        level: u8,
        attributes: u64,
        memory: &mut impl TablePages,
    ) -> Result<(), MapError> {
        let (entry, _) = self.entry(ipa, level, Some(memory))?;
        // SAFETY: `entry` is an entry of this space at `level`. A table there (pages mapped or
        // once mapped below a block-sized range) is not overwritten: that would need the
        // break-before-make of a table, so it is refused like a live mapping.
        if unsafe { entry.read_volatile() } & 1 != 0 {
            return Err(MapError::AlreadyMapped);
        }
        let kind = if level == 3 { PAGE } else { BLOCK };
        // SAFETY: as above. Mapping into an invalid entry needs no TLB maintenance; the DSB
        // makes the descriptor visible to the walker before the space is used.
        unsafe {
            entry.write_volatile((pa & OA_MASK) | attributes | kind);
            asm!("dsb ishst", options(nostack, preserves_flags));
        }
        Ok(())
    }

    /// Maps the 4K page at `ipa` to `pa` with the leaf attribute bits `attributes`.
    ///
    /// # Errors
    ///
    /// [`MapError`] for a bad address, an existing mapping, or no memory for tables.
    pub fn map_page(
        &mut self,
        ipa: u64,
        pa: u64,
        attributes: u64,
        memory: &mut impl TablePages,
    ) -> Result<(), MapError> {
        self.map_leaf((ipa, pa), 3, attributes, memory)
    }

    /// Maps the 2 MiB block at `ipa` (2 MiB aligned, as `pa` must be) with a level-2 block
    /// descriptor (Arm ARM D8.3.1, 4K granule: a level-2 block maps 2 MiB).
    ///
    /// # Errors
    ///
    /// [`MapError::BadAddress`] when either address is not 2 MiB aligned; as [`Self::map_page`].
    pub fn map_block(
        &mut self,
        ipa: u64,
        pa: u64,
        attributes: u64,
        memory: &mut impl TablePages,
    ) -> Result<(), MapError> {
        if (ipa | pa) & (BLOCK_SIZE - 1) != 0 {
            return Err(MapError::BadAddress);
        }
        self.map_leaf((ipa, pa), 2, attributes, memory)
    }

    /// The valid leaf descriptor covering `ipa` and the size it maps, if any.
    fn lookup(&mut self, ipa: u64) -> Option<(u64, u64)> {
        let (entry, level) = self.entry::<MemoryMap>(ipa & !0xfff, 3, None).ok()?;
        // SAFETY: `entry` is a valid-level entry of this space.
        let value = unsafe { entry.read_volatile() };
        let size = if level == 3 { 0x1000 } else { BLOCK_SIZE };
        let leaf = if level == 3 { PAGE } else { BLOCK };
        (value & 3 == leaf).then_some((value, size))
    }

    /// The output address `ipa` maps to, if mapped.
    #[must_use]
    pub fn translate(&mut self, ipa: u64) -> Option<u64> {
        let (value, size) = self.lookup(ipa)?;
        Some((value & OA_MASK & !(size - 1)) | (ipa & (size - 1)))
    }

    /// The output address `ipa` maps to and how many bytes from `ipa` on the same leaf maps
    /// contiguously (to the end of its page or block).
    #[must_use]
    pub fn translate_extent(&mut self, ipa: u64) -> Option<(u64, u64)> {
        let (value, size) = self.lookup(ipa)?;
        let offset = ipa & (size - 1);
        Some(((value & OA_MASK & !(size - 1)) | offset, size - offset))
    }

    /// The access a mapping at `ipa` allows.
    #[must_use]
    pub fn access(&mut self, ipa: u64) -> Option<stage2::S2Access> {
        let (value, _) = self.lookup(ipa)?;
        Some(stage2::S2Access {
            read: value & (1 << 6) != 0,
            write: value & (1 << 7) != 0,
            exec: (value >> 53) & 3 != 0b10,
        })
    }

    /// Unmaps the 2 MiB block at `ipa`, if mapped, and invalidates the TLB for it before
    /// returning.
    pub fn unmap_block(&mut self, ipa: u64, invalidate: bool) -> bool {
        if !self.break_leaf(ipa, 2) {
            return false;
        }
        publish_breaks();
        // One TLBI by IPA removes a block's entry (any address inside it: R_RVZZVZ, "required to
        // translate the address"). A VMID of an older generation has no TLB entries (they were
        // all invalidated when it changed).
        if invalidate {
            self.invalidate_range(ipa, 0x1000);
        }
        true
    }

    /// Unmaps the pages mapped in `[ipa, ipa + pages * 4 KiB)` and invalidates the TLB for the
    /// range before returning: every entry is broken first, then one DSB ISHST and one
    /// invalidation of the range ([`Self::invalidate_range`]), not one per page. A VMID of an
    /// older generation (`invalidate` false) has no TLB entries.
    pub fn unmap_pages(&mut self, ipa: u64, pages: u64, invalidate: bool) {
        let mut broken = false;
        for page in 0..pages {
            broken |= self.break_leaf(ipa + page * 0x1000, 3);
        }
        if broken {
            publish_breaks();
            if invalidate {
                self.invalidate_range(ipa, pages * 0x1000);
            }
        }
    }

    /// Break: the leaf at `ipa` (page or block, as `level` says), if there is one, becomes
    /// invalid. The caller then publishes it ([`publish_breaks`]) and invalidates the TLB.
    fn break_leaf(&mut self, ipa: u64, level: u8) -> bool {
        let Ok((entry, found)) = self.entry::<MemoryMap>(ipa, level, None) else {
            return false;
        };
        let leaf = if level == 3 { PAGE } else { BLOCK };
        // SAFETY: `entry` is an entry of this space.
        if found != level || unsafe { entry.read_volatile() } & 3 != leaf {
            return false;
        }
        // SAFETY: as above; the table walker may read it concurrently and sees old or new.
        unsafe { entry.write_volatile(0) };
        true
    }

    /// Invalidates the TLB entries of `[ipa, ipa + size)` for this space's VMID (bounded work):
    /// one TLBI IPAS2E1IS per page and one TLBI VMALLE1IS ([`tlb::invalidate_ipa_pages`]). A
    /// range of more than [`TLBI_RANGE_PAGES`] pages invalidates the whole VMID instead.
    pub fn invalidate_range(&self, ipa: u64, size: u64) {
        let (first, pages) = (ipa >> 12, size.div_ceil(0x1000));
        if pages > TLBI_RANGE_PAGES || first + pages > tlb::IPA_PAGE_LIMIT {
            self.invalidate_all();
        } else {
            tlb::invalidate_ipa_pages(self.vttbr(), first, pages);
        }
    }

    /// Invalidates every TLB entry of this space's VMID (stage 2 and combined), for a space
    /// being destroyed: its VMID may be reused at once.
    pub fn invalidate_all(&self) {
        tlb::invalidate_vmid(self.vttbr());
    }
}

/// The second step of break-before-make (D8.17.1, R_DDMVT): DSB ISHST makes the invalid entries
/// just written visible to every table walker in the domain before the TLB invalidation that
/// follows (a walk after it cannot load the old entry again).
fn publish_breaks() {
    // SAFETY: a barrier; it changes no memory.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// Sets VTCR_EL2 (stage-2 translation control for every space: `capvisor_kernel::stage2::vtcr`),
/// then ISB.
///
/// # Safety
/// No EL1&0 code runs yet, and every stage-2 table the kernel builds afterwards is built for
/// this configuration (granule, start level, input size).
pub unsafe fn set_vtcr(vtcr: u64) {
    // SAFETY: the caller's contract; the ISB makes the value take effect before any entry into
    // a space.
    unsafe { asm!("msr vtcr_el2, {}", "isb", in(reg) vtcr, options(nostack, preserves_flags)) };
}
