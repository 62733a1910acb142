//! Turning the EL1&0 stage-1 MMU and caches on over an identity map, and off again (Arm ARM DDI
//! 0487 K.a, D8.2 "Translation process" and D8.11 "Translation table maintenance").

use super::cache::invalidate_to_poc;
use crate::encode::cache_lines;
use crate::stage1::{self, ENTRIES, MAIR, SCTLR_A, SCTLR_C, SCTLR_I, SCTLR_M, TCR};
use core::arch::asm;

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

static mut LEVEL1: Table = Table([0; ENTRIES]);

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The guest image's memory, text to stack: `(start, end)`.
#[must_use]
pub fn image_range() -> (u64, u64) {
    (
        (&raw const __image_start) as u64,
        (&raw const __image_end) as u64,
    )
}

/// Builds the identity map of the first 4 GiB (the first as device memory, the rest as Normal
/// write-back) and turns stage 1 and both caches on.
///
/// # Safety
/// The MMU must be off. Data written with the data cache off is kept; nothing else may be
/// cached (true since the guest started with caches off).
pub unsafe fn enable_mmu() {
    let table = stage1::identity_level1(4);
    let level1 = &raw mut LEVEL1;
    // SAFETY: single-threaded; nothing else refers to LEVEL1.
    unsafe { (*level1).0 = table };
    let (start, end) = image_range();
    // The image (its tables and stack included) was written with the caches off, straight to
    // memory: drop any stale lines so that cacheable reads and table walks see memory.
    // SAFETY: nothing in the image was written with the data cache on.
    unsafe { invalidate_to_poc(start, end - start) };
    let sctlr_set = SCTLR_M | SCTLR_C | SCTLR_I;
    // SAFETY: the map is an identity map of all the guest uses, so execution continues at the
    // next instruction; the barriers make the register writes take effect before the MMU does
    // (the TLB invalidation drops entries from any earlier translation regime use).
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {s}, sctlr_el1",
            "orr {s}, {s}, {set}",
            "bic {s}, {s}, {clear}",
            "msr sctlr_el1, {s}",
            "isb",
            mair = in(reg) MAIR, tcr = in(reg) TCR, ttbr = in(reg) level1 as u64,
            set = in(reg) sctlr_set, clear = in(reg) SCTLR_A, s = out(reg) _,
            options(nostack)
        );
    }
}

/// Turns stage 1 and the caches off again: cleans and invalidates the image and `start..end` to
/// the point of coherency, with no store between the clean and the SCTLR_EL1 write, so memory
/// then holds everything the guest wrote; invalidates again afterwards so that no line fetched
/// meanwhile survives to a later `enable_mmu`.
///
/// # Safety
/// The MMU must be on with [`enable_mmu`]'s identity map; data the guest needs must lie in the
/// image or in `start..end`.
pub unsafe fn disable_mmu(start: u64, end: u64) {
    let (image_start, image_end) = image_range();
    let (first, last) = (start.min(image_start), end.max(image_end));
    let ctr: u64;
    // SAFETY: CTR_EL0 read; no memory effects.
    unsafe { asm!("mrs {c}, ctr_el0", c = out(reg) ctr, options(nomem, nostack)) };
    let line = cache_lines(ctr).0;
    let clear = SCTLR_M | SCTLR_C | SCTLR_I;
    // SAFETY: identity map, so execution continues at the next instruction with the MMU off; the
    // block writes no memory, so the clean covers every store the guest made.
    unsafe {
        asm!(
            "bic {a}, {first}, {mask}",
            "1: dc civac, {a}",
            "add {a}, {a}, {line}",
            "cmp {a}, {last}",
            "b.lo 1b",
            "dsb sy",
            "mrs {s}, sctlr_el1",
            "bic {s}, {s}, {clear}",
            "msr sctlr_el1, {s}",
            "isb",
            "bic {a}, {first}, {mask}",
            "2: dc ivac, {a}",
            "add {a}, {a}, {line}",
            "cmp {a}, {last}",
            "b.lo 2b",
            "dsb sy",
            "ic iallu",
            "dsb nsh",
            "isb",
            first = in(reg) first, last = in(reg) last, line = in(reg) line,
            mask = in(reg) line - 1, clear = in(reg) clear, a = out(reg) _, s = out(reg) _,
            options(nostack)
        );
    }
}
