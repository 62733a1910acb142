//! Cache maintenance: the one reader of CTR_EL0 and the one data-cache line walker, used by every
//! clean and invalidate the kernel makes (its image at boot, secondary CPUs' boot records,
//! service code, guests' memory), and the instruction-cache invalidations that go with them.
//!
//! Maintenance by address steps by the smallest data cache line, CTR_EL0.DminLine: a DC
//! instruction by VA affects at least the line of that size holding the address (Arm ARM DDI
//! 0487 L.a, D7.5.2 "Cache identification": CTR_EL0 gives the minimum line length of the caches
//! the maintenance instructions affect). The walker does four lines per loop iteration while four
//! fit: the loop's own add, compare and branch would otherwise cost as much as the DC itself (a
//! 2 MiB clean is 32,768 lines of 64 bytes).
//!
//! DC ZVA (`cpu::zero`) is a store, not maintenance, and steps by DCZID_EL0's block size.

use core::arch::asm;

/// CTR_EL0, the cache type register (not among `aarch64-cpu`'s registers).
#[must_use]
pub fn ctr_el0() -> u64 {
    let value: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The smallest data cache line, from CTR_EL0.DminLine (log2 of words), in bytes.
#[must_use]
#[inline]
pub fn dcache_line() -> u64 {
    4 << ((ctr_el0() >> 16) & 0xf)
}

/// A data cache maintenance instruction by virtual address.
trait LineOp {
    /// The instruction for the line holding `at`.
    ///
    /// # Safety
    /// That of the operation (only [`InvalidatePoc`] can lose data: see
    /// [`invalidate_to_poc`]); `at` is kernel-mapped memory.
    unsafe fn one(at: u64);

    /// The instruction for the four lines from `at` (line-aligned); returns the address after
    /// them.
    ///
    /// # Safety
    /// As [`LineOp::one`], for each of the four lines.
    unsafe fn four(at: u64, line: u64) -> u64;
}

/// Defines a [`LineOp`] for one DC instruction.
macro_rules! line_op {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        struct $name;

        impl LineOp for $name {
            #[inline(always)]
            unsafe fn one(at: u64) {
                // SAFETY: the caller's contract (`LineOp::one`).
                unsafe { asm!(concat!($insn, ", {}"), in(reg) at, options(nostack, preserves_flags)) };
            }

            #[inline(always)]
            unsafe fn four(mut at: u64, line: u64) -> u64 {
                // SAFETY: the caller's contract (`LineOp::four`).
                unsafe {
                    asm!(
                        concat!($insn, ", {a}"),
                        "add {a}, {a}, {line}",
                        concat!($insn, ", {a}"),
                        "add {a}, {a}, {line}",
                        concat!($insn, ", {a}"),
                        "add {a}, {a}, {line}",
                        concat!($insn, ", {a}"),
                        "add {a}, {a}, {line}",
                        a = inout(reg) at,
                        line = in(reg) line,
                        options(nostack, preserves_flags)
                    )
                };
                at
            }
        }
    };
}

line_op!(
    /// DC CIVAC: clean and invalidate to the Point of Coherency.
    CleanInvalidatePoc,
    "dc civac"
);
line_op!(
    /// DC CVAC: clean to the Point of Coherency.
    CleanPoc,
    "dc cvac"
);
line_op!(
    /// DC IVAC: invalidate to the Point of Coherency (dirty data in the lines is lost).
    InvalidatePoc,
    "dc ivac"
);
line_op!(
    /// DC CVAU: clean to the Point of Unification.
    CleanPou,
    "dc cvau"
);

/// The data-cache line walker: `O` on every line of `[start, end)`.
///
/// # Safety
/// `[start, end)` is memory the kernel maps; and [`LineOp::one`]'s contract for `O`.
#[inline(always)]
unsafe fn walk<O: LineOp>(start: u64, end: u64) {
    let line = dcache_line();
    let mut at = start & !(line - 1);
    while at + 4 * line <= end {
        // SAFETY: four whole lines inside the caller's range.
        at = unsafe { O::four(at, line) };
    }
    while at < end {
        // SAFETY: a line overlapping the caller's range.
        unsafe { O::one(at) };
        at += line;
    }
}

/// Cleans and invalidates `[start, end)` (kernel-mapped) to the Point of Coherency, then DSB SY,
/// so an observer whose access is not cacheable (a guest with its MMU off, a device) sees what
/// was written through the cache, and no stale line survives for a later cacheable access.
pub fn clean_invalidate_to_poc(start: u64, end: u64) {
    // SAFETY: cleaning and invalidating a line changes no memory contents as seen by any
    // observer; the caller names memory the kernel maps.
    unsafe { walk::<CleanInvalidatePoc>(start, end) };
    // SAFETY: a barrier. DSB SY: the maintenance completes for every observer, to the PoC,
    // before anything that follows (the caller's mapping or reply) can make the memory visible.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Cleans `[start, end)` (kernel-mapped) to the Point of Coherency, then DSB SY (records another
/// CPU reads with its MMU still off).
pub fn clean_to_poc(start: u64, end: u64) {
    // SAFETY: DC CVAC writes dirty lines back to memory; it changes no data.
    unsafe { walk::<CleanPoc>(start, end) };
    // SAFETY: a barrier. It completes the cleans before the other CPU is told to read.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Invalidates `[start, end)` to the Point of Coherency, then DSB SY, so nothing cached before
/// the MMU was on can shadow what was written with caches off.
///
/// # Safety
/// Any data in the range that is only in a cache is lost; call it only while the data caches
/// are off (and `[start, end)` is memory the kernel will map).
pub unsafe fn invalidate_to_poc(start: u64, end: u64) {
    // SAFETY: the caller promises that the lines hold nothing newer than memory.
    unsafe { walk::<InvalidatePoc>(start, end) };
    // SAFETY: a barrier. It completes the invalidations before the MMU is turned on.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Cleans `[start, end)` (kernel-mapped) to the Point of Unification, so instruction fetches of
/// code written through the data side see it (unless CTR_EL0.IDC says they do). No barrier: the
/// caller finishes a batch with [`sync_instructions`], whose DSB completes these cleans.
pub fn clean_to_pou(start: u64, end: u64) {
    // SAFETY: DC CVAU writes dirty lines back to the point of unification; no data changes.
    unsafe { walk::<CleanPou>(start, end) };
}

/// IC IALLUIS, DSB ISH, ISB: every instruction cache of the Inner Shareable domain invalidated
/// to the Point of Unification.
pub fn invalidate_icache() {
    // SAFETY: instruction-cache invalidation and barriers change no memory contents. The DSB ISH
    // completes the invalidation on every PE of the domain; the ISB makes this PE's own later
    // fetches see it.
    unsafe {
        asm!(
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Code written through the kernel's data side and cleaned to PoU ([`clean_to_pou`], unless
/// CTR_EL0.IDC) becomes fetchable: the instruction caches are invalidated unless CTR_EL0.DIC
/// says instruction fetches are coherent without it; either way DSB ISH completes the cleans and
/// ISB synchronises this PE's context.
pub fn sync_instructions(dic: bool) {
    if dic {
        // SAFETY: barriers: the DSB completes the cleans, the ISB discards fetched instructions.
        unsafe { asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
    } else {
        invalidate_icache();
    }
}
