//! Cache maintenance by virtual address, with the line sizes CTR_EL0 gives (Arm ARM DDI 0487 K.a,
//! D7.5.9 "Data cache maintenance instructions" and B2.4.4 "Implication of caches for the
//! application programmer", on concurrent modification and execution of instructions).

use crate::encode::cache_lines;
use core::arch::asm;

fn line_sizes() -> (u64, u64) {
    let ctr: u64;
    // SAFETY: CTR_EL0 is readable at EL1 (SCTLR_EL1.UCT only concerns EL0); no memory effects.
    unsafe { asm!("mrs {c}, ctr_el0", c = out(reg) ctr, options(nomem, nostack)) };
    cache_lines(ctr)
}

fn lines(start: u64, len: u64, line: u64) -> impl Iterator<Item = u64> {
    let first = start & !(line - 1);
    (first..start + len).step_by(line as usize)
}

/// Makes instructions written as data at `start..start + len` executable: clean the data cache to
/// the point of unification, DSB, invalidate the instruction cache to PoU, DSB, ISB — the
/// sequence the Arm ARM requires of software that writes instructions, whatever CTR_EL0.IDC and
/// DIC say (they only make steps redundant, never wrong).
pub fn sync_instructions(start: u64, len: u64) {
    let (dline, iline) = line_sizes();
    for line in lines(start, len, dline) {
        // SAFETY: cleaning a cache line changes no memory contents.
        unsafe { asm!("dc cvau, {a}", a = in(reg) line, options(nostack)) };
    }
    // SAFETY: barriers only.
    unsafe { asm!("dsb ish", options(nostack)) };
    for line in lines(start, len, iline) {
        // SAFETY: invalidating instruction cache lines changes no memory contents.
        unsafe { asm!("ic ivau, {a}", a = in(reg) line, options(nostack)) };
    }
    // SAFETY: barriers only.
    unsafe { asm!("dsb ish", "isb", options(nostack)) };
}

/// Cleans and invalidates `start..start + len` to the point of coherency.
pub fn clean_invalidate_to_poc(start: u64, len: u64) {
    let (dline, _) = line_sizes();
    for line in lines(start, len, dline) {
        // SAFETY: writes dirty lines back; memory then holds what the program last wrote.
        unsafe { asm!("dc civac, {a}", a = in(reg) line, options(nostack)) };
    }
    // SAFETY: barrier only.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Invalidates `start..start + len` to the point of coherency, dropping any cached copies.
///
/// # Safety
/// No dirty line in the range may hold data the program still needs: only use it on memory last
/// written with the data cache off (or never).
pub unsafe fn invalidate_to_poc(start: u64, len: u64) {
    let (dline, _) = line_sizes();
    for line in lines(start, len, dline) {
        // SAFETY: the caller guarantees no needed data is only in the cache.
        unsafe { asm!("dc ivac, {a}", a = in(reg) line, options(nostack)) };
    }
    // SAFETY: barrier only.
    unsafe { asm!("dsb sy", options(nostack)) };
}
