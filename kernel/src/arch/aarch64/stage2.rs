//! Stage-2 address spaces: the translation tables of a service (and, later, a VM), tagged by a
//! VMID, with TLB maintenance that always targets that VMID.
//!
//! Tables are 4K-granule, walked from the start level VTCR_EL2 gives (`capvisor_kernel::stage2`
//! has the encodings). Table pages come from a [`TablePages`] source (the boot memory map, or
//! the glue's pool), zeroed, and are reached through the kernel's identity map. Writes are made visible to the table walker with DSB ISHST (the
//! walks are inner-shareable write-back, Arm ARM D8.2.6, so no cache maintenance is needed).
//! Removing a valid entry is break-before-make: invalid first, then TLBI by IPA for the VMID,
//! then (for combined stage-1+2 entries) TLBI VMALLE1IS (Arm ARM D8.13.5 "TLB maintenance
//! requirements and the TLB maintenance instructions", the sequence for changing stage-2 entries).

use capvisor_kernel::memmap::MemoryMap;
use capvisor_kernel::stage2::{self, BLOCK, OA_MASK, PAGE, TABLE};
use core::arch::asm;

const ENTRIES: usize = 512;
/// A level-2 block (4K granule).
pub const BLOCK_SIZE: u64 = 2 << 20;

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

fn zeroed_page(memory: &mut impl TablePages) -> Result<u64, MapError> {
    let pa = memory.take_page().ok_or(MapError::OutOfMemory)?;
    // SAFETY: the page was just taken from the free memory map, so nothing else uses it; RAM is
    // identity mapped read/write in the kernel's map.
    unsafe { core::ptr::write_bytes(table(pa), 0, ENTRIES) };
    Ok(pa)
}

impl AddressSpace {
    /// An empty address space of `ipa_bits` input bits, tagged `vmid`.
    ///
    /// # Errors
    ///
    /// [`MapError::OutOfMemory`] when no page is left for the root table.
    pub fn new(vmid: u16, ipa_bits: u32, memory: &mut impl TablePages) -> Result<Self, MapError> {
        Ok(Self {
            root: zeroed_page(memory)?,
            vmid,
            ipa_bits,
        })
    }

    /// VTTBR_EL2 for this space.
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

    /// Unmaps the page at `ipa`, if mapped, and invalidates the TLB for it before returning.
    pub fn unmap_page(&mut self, ipa: u64) -> bool {
        self.unmap_leaf(ipa, 3)
    }

    /// Unmaps the 2 MiB block at `ipa`, if mapped, and invalidates the TLB for it before
    /// returning.
    pub fn unmap_block(&mut self, ipa: u64) -> bool {
        self.unmap_leaf(ipa, 2)
    }

    fn unmap_leaf(&mut self, ipa: u64, level: u8) -> bool {
        let Ok((entry, found)) = self.entry::<MemoryMap>(ipa, level, None) else {
            return false;
        };
        let leaf = if level == 3 { PAGE } else { BLOCK };
        // SAFETY: `entry` is an entry of this space.
        if found != level || unsafe { entry.read_volatile() } & 3 != leaf {
            return false;
        }
        // SAFETY: break: the entry becomes invalid; the DSB orders it before the TLBI.
        unsafe {
            entry.write_volatile(0);
            asm!("dsb ishst", options(nostack, preserves_flags));
        }
        // One TLBI by IPA removes a block's entry too (any address inside it).
        self.invalidate_ipa(ipa);
        true
    }

    /// Invalidates the TLB entries of `[ipa, ipa + size)` for this space's VMID, page by page.
    pub fn invalidate_range(&self, ipa: u64, size: u64) {
        for page in (0..size / 0x1000).map(|n| ipa + n * 0x1000) {
            self.invalidate_ipa(page);
        }
    }

    /// Calls `each` with every table page of this space (the root last), for a space being
    /// destroyed: after [`AddressSpace::invalidate_all`] the walker can no longer use them.
    pub fn table_pages(&self, mut each: impl FnMut(u64)) {
        self.visit_tables(self.root, stage2::start_level(self.ipa_bits), &mut each);
    }

    fn visit_tables(&self, table_pa: u64, level: u8, each: &mut impl FnMut(u64)) {
        if level < 3 {
            for index in 0..ENTRIES {
                // SAFETY: `table_pa` is a table page of this space (the root, or the output of a
                // table descriptor we wrote); the index is below 512.
                let value = unsafe { table(table_pa).add(index).read_volatile() };
                if value & 3 == TABLE {
                    // At most three levels below the root: the recursion is bounded.
                    self.visit_tables(value & OA_MASK, level + 1, each);
                }
            }
        }
        each(table_pa);
    }

    /// Invalidates every TLB entry of this space's VMID (stage 2 and combined), for a space
    /// being destroyed: its VMID may be reused at once.
    pub fn invalidate_all(&self) {
        // SAFETY: as in `invalidate_ipa`: VTTBR_EL2 is switched to this space's VMID and back
        // while no EL1&0 code runs; TLBI VMALLS12E1IS drops all its stage-1 and stage-2
        // entries on every CPU of the domain once the DSB completes.
        unsafe {
            asm!(
                "mrs {saved}, vttbr_el2",
                "msr vttbr_el2, {target}",
                "isb",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                "msr vttbr_el2, {saved}",
                "isb",
                saved = out(reg) _,
                target = in(reg) self.vttbr(),
                options(nostack, preserves_flags)
            );
        }
    }

    /// TLBI by IPA for this space's VMID, whichever VMID is loaded now.
    fn invalidate_ipa(&self, ipa: u64) {
        // SAFETY: VTTBR_EL2 only affects the EL1&0 regime, which is not running while the kernel
        // is; it is restored before returning. TLBI IPAS2E1IS removes the stage-2 entry for the
        // VMID in VTTBR_EL2; TLBI VMALLE1IS removes combined stage-1+2 entries that may cache
        // it; DSB ISH waits for both on every CPU in the domain.
        unsafe {
            asm!(
                "mrs {saved}, vttbr_el2",
                "msr vttbr_el2, {target}",
                "isb",
                "tlbi ipas2e1is, {page}",
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                "msr vttbr_el2, {saved}",
                "isb",
                saved = out(reg) _,
                target = in(reg) self.vttbr(),
                page = in(reg) (ipa >> 12) & ((1 << 36) - 1),
                options(nostack, preserves_flags)
            );
        }
    }
}
