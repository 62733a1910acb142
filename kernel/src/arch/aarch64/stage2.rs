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

    /// The leaf entry for `ipa`, creating tables on the way when `memory` is given.
    fn leaf<P: TablePages>(
        &mut self,
        ipa: u64,
        mut memory: Option<&mut P>,
    ) -> Result<*mut u64, MapError> {
        if ipa >> self.ipa_bits != 0 || ipa & 0xfff != 0 {
            return Err(MapError::BadAddress);
        }
        let mut current = self.root;
        for level in stage2::start_level(self.ipa_bits)..3 {
            // SAFETY: `current` is a table page of this space (the root, or a table descriptor's
            // output address that we wrote); the index is below 512.
            let entry = unsafe { table(current).add(stage2::table_index(ipa, level)) };
            // SAFETY: `entry` points into a table page owned by this space.
            let value = unsafe { entry.read_volatile() };
            current = match value & 3 {
                TABLE => value & OA_MASK,
                BLOCK => return Err(MapError::AlreadyMapped),
                _ => {
                    let memory = memory.as_deref_mut().ok_or(MapError::BadAddress)?;
                    let next = zeroed_page(memory)?;
                    // SAFETY: as above; the new table is zeroed (all invalid) before it is linked.
                    unsafe { entry.write_volatile(next | TABLE) };
                    next
                }
            };
        }
        // SAFETY: `current` is a level-3 table of this space.
        Ok(unsafe { table(current).add(stage2::table_index(ipa, 3)) })
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
        let entry = self.leaf(ipa, Some(memory))?;
        // SAFETY: `entry` is a level-3 entry of this space.
        if unsafe { entry.read_volatile() } & 1 != 0 {
            return Err(MapError::AlreadyMapped);
        }
        // SAFETY: as above. Mapping into an invalid entry needs no TLB maintenance; the DSB
        // makes the descriptor visible to the walker before the space is used.
        unsafe {
            entry.write_volatile((pa & OA_MASK) | attributes | PAGE);
            asm!("dsb ishst", options(nostack, preserves_flags));
        }
        Ok(())
    }

    /// The output address `ipa`'s page maps to, if mapped.
    #[must_use]
    pub fn translate(&mut self, ipa: u64) -> Option<u64> {
        let entry = self.leaf::<MemoryMap>(ipa & !0xfff, None).ok()?;
        // SAFETY: `entry` is a level-3 entry of this space.
        let value = unsafe { entry.read_volatile() };
        (value & 3 == PAGE).then_some((value & OA_MASK) | (ipa & 0xfff))
    }

    /// The access a mapped page at `ipa` allows.
    #[must_use]
    pub fn access(&mut self, ipa: u64) -> Option<stage2::S2Access> {
        let entry = self.leaf::<MemoryMap>(ipa & !0xfff, None).ok()?;
        // SAFETY: `entry` is a level-3 entry of this space.
        let value = unsafe { entry.read_volatile() };
        (value & 3 == PAGE).then(|| stage2::S2Access {
            read: value & (1 << 6) != 0,
            write: value & (1 << 7) != 0,
            exec: (value >> 53) & 3 != 0b10,
        })
    }

    /// Unmaps the page at `ipa`, if mapped, and invalidates the TLB for it before returning.
    pub fn unmap_page(&mut self, ipa: u64) -> bool {
        let Ok(entry) = self.leaf::<MemoryMap>(ipa, None) else {
            return false;
        };
        // SAFETY: `entry` is a level-3 entry of this space.
        if unsafe { entry.read_volatile() } & 1 == 0 {
            return false;
        }
        // SAFETY: break: the entry becomes invalid; the DSB orders it before the TLBI.
        unsafe {
            entry.write_volatile(0);
            asm!("dsb ishst", options(nostack, preserves_flags));
        }
        self.invalidate_ipa(ipa);
        true
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
