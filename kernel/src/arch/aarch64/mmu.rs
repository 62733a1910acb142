//! The kernel's own EL2 stage-1 translation: an identity map built with `aarch64-paging`, with
//! caches on.
//!
//! Memory types (MAIR_EL2, Arm ARM DDI 0487 L.a D8.6 "Memory region attributes"): index 0
//! Device-nGnRE for MMIO, index 1 Normal write-back (inner and outer, read/write-allocate) for
//! RAM, index 2 Normal non-cacheable. The tables' pages come from a static pool, so building
//! them needs no heap (and no lock, which matters while the MMU is still off: exclusive
//! accesses to Device memory are not guaranteed to work, Arm ARM B2.9.5).

use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{El23Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El2, MemoryRegion, PageTable, Translation};
use core::arch::asm;
use core::ptr::NonNull;

/// Pages the pool holds for translation tables.
const POOL_PAGES: usize = 64;
const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct Pool([[u8; PAGE]; POOL_PAGES]);

static mut TABLE_POOL: Pool = Pool([[0; PAGE]; POOL_PAGES]);

/// MAIR_EL2: attr0 Device-nGnRE (0x04), attr1 Normal WB RA/WA (0xff), attr2 Normal NC (0x44).
pub const MAIR: u64 = 0x04 | (0xff << 8) | (0x44 << 16);

/// Attributes of the kernel's mappings. AP[1] (`USER_RES1`) is RES1 in the EL2 regime.
pub mod attrs {
    use aarch64_paging::descriptor::El23Attributes as A;

    const BASE: A = A::VALID.union(A::ACCESSED).union(A::USER_RES1);
    /// Kernel code: read-only, executable.
    pub const CODE: A = BASE
        .union(A::ATTRIBUTE_INDEX_1)
        .union(A::INNER_SHAREABLE)
        .union(A::READ_ONLY);
    /// Read-only data.
    pub const RODATA: A = CODE.union(A::XN);
    /// RAM: read/write, never executable.
    pub const RAM: A = BASE
        .union(A::ATTRIBUTE_INDEX_1)
        .union(A::INNER_SHAREABLE)
        .union(A::XN);
    /// MMIO: Device-nGnRE, never executable.
    pub const DEVICE: A = BASE.union(A::ATTRIBUTE_INDEX_0).union(A::XN);
}

/// Hands out the pool's pages, one per table, never to be freed (boot tables live forever).
#[derive(Debug)]
pub struct PoolTranslation {
    next: usize,
}

impl Translation<El23Attributes> for PoolTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El23Attributes>>, PhysicalAddress) {
        assert!(self.next < POOL_PAGES, "kernel page-table pool exhausted");
        // SAFETY: only the address of the pool is taken, no reference; each index is handed out
        // once (`next` only grows), so the page is used by this table alone. The pool is in
        // zero-initialised data, so the page is zeroed as `allocate_table` requires.
        let page =
            unsafe { (&raw mut TABLE_POOL.0[self.next]).cast::<PageTable<El23Attributes>>() };
        self.next += 1;
        let page = NonNull::new(page).expect("static addresses are not null");
        // Identity mapped: the physical address is the virtual one.
        (page, PhysicalAddress(page.as_ptr() as usize))
    }

    unsafe fn deallocate_table(&mut self, _page_table: NonNull<PageTable<El23Attributes>>) {
        // Boot tables are never split back; a freed table page is simply not reused.
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El23Attributes>> {
        NonNull::new(pa.0 as *mut _).expect("table addresses are not null")
    }
}

/// The kernel's EL2 page table.
pub type KernelMap = Mapping<PoolTranslation, El2>;

/// Creates the (empty) kernel page table: 48-bit input addresses, root at level 0.
#[must_use]
pub fn new_map() -> KernelMap {
    Mapping::new(PoolTranslation { next: 0 }, 0, El2)
}

/// Maps `[start, end)` to itself with `flags`.
///
/// # Errors
///
/// What `aarch64-paging` reports (a range beyond 48 bits, or a break-before-make violation).
pub fn identity_map(
    map: &mut KernelMap,
    start: usize,
    end: usize,
    flags: El23Attributes,
) -> Result<(), aarch64_paging::MapError> {
    map.map_range(
        &MemoryRegion::new(start, end),
        PhysicalAddress(start & !(PAGE - 1)),
        flags,
        Constraints::empty(),
    )
}

/// TCR_EL2 for the nVHE EL2 regime (Arm ARM D24.2.185 "TCR_EL2"): T0SZ=16 (48-bit VA), table
/// walks inner/outer write-back cacheable and inner shareable, 4K granule, PS = `ps`; bits 31
/// and 23 are RES1.
#[must_use]
pub fn tcr(ps: u64) -> u64 {
    const T0SZ: u64 = 16;
    const IRGN0_WBWA: u64 = 1 << 8;
    const ORGN0_WBWA: u64 = 1 << 10;
    const SH0_INNER: u64 = 3 << 12;
    const RES1: u64 = (1 << 31) | (1 << 23);
    T0SZ | IRGN0_WBWA | ORGN0_WBWA | SH0_INNER | (ps << 16) | RES1
}

/// SCTLR_EL2 with the MMU, data and instruction caches and SP alignment checks on, little-endian,
/// WXN off (Arm ARM D24.2.168 "SCTLR_EL2"; RES1 bits 4, 5, 11, 16, 18, 22, 23, 28, 29).
pub const SCTLR: u64 = 0x30c5_0830 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12);

/// Turns the MMU and caches on with `map` as the translation.
///
/// # Safety
///
/// `map` must map all the memory the kernel uses (code, data, stacks, the device tree, the
/// console) at the addresses it uses now, and must stay alive and active for ever after.
pub unsafe fn enable(map: &mut KernelMap, ps: u64) {
    // SAFETY: MAIR and TCR only take effect with the MMU on, which happens below, after the
    // table is installed.
    unsafe {
        asm!("msr mair_el2, {}", in(reg) MAIR, options(nostack, preserves_flags));
        asm!("msr tcr_el2, {}", in(reg) tcr(ps), options(nostack, preserves_flags));
        asm!("isb", options(nostack, preserves_flags));
    }
    // SAFETY: the caller promises the table maps everything in use, identically, and lives on.
    unsafe { map.activate() };
    // The TLB may hold entries from firmware: they are dropped before translation starts.
    super::tlb::invalidate_el2_local();
    // SAFETY: turning the MMU on is safe by the caller's promise; the ISB makes the new
    // translation apply to the instructions that follow.
    unsafe {
        asm!(
            "msr sctlr_el2, {sctlr}",
            "isb",
            sctlr = in(reg) SCTLR,
            options(nostack, preserves_flags)
        );
    }
}
