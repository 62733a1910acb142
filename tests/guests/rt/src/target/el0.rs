//! Trips to EL0 inside the guest: [`run`] enters code at EL0 (AArch64 or AArch32, as the SPSR
//! says) with the registers given, and returns when the first exception from EL0 reaches EL1 —
//! an SVC, an UNDEF, an abort, a trap the guest's own EL1 controls, a debug exception — with
//! what it reported. Interrupts taken from EL0 go to the IRQ hook if one is set, and EL0 goes on.
//!
//! The EL1 state of the caller is kept across the trip: callee-saved registers, SP and DAIF are
//! saved before the ERET and put back when the trip ends (Arm ARM DDI 0487, D1.3 "Exception
//! entry" and D1.4 "Exception return"; the EL1 stack pointer is not used at EL0, so the
//! exception frame lands below the caller's).

use super::ExceptionFrame;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

/// SPSR_EL1.M for AArch64 EL0 (EL0t).
pub const SPSR_EL0T: u64 = 0b0000;
/// SPSR_EL1.M for AArch32 User mode: M[4] = 1 (AArch32), mode 0b10000.
pub const SPSR_AARCH32_USER: u64 = 0b1_0000;
/// SPSR_EL1.T (AArch32): Thumb (T32) state.
pub const SPSR_T32: u64 = 1 << 5;
/// SPSR_EL1 D, A, I, F (bits 9 to 6 for AArch64; A, I, F are bits 8 to 6 in AArch32 format).
pub const SPSR_DAIF: u64 = 0b1111 << 6;
/// SPSR_EL1.SS, bit 21: software step (the step state machine, Arm ARM D2.12).
pub const SPSR_SS: u64 = 1 << 21;

/// Where EL0 starts.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Entry {
    /// Its first instruction (ELR_EL1).
    pub pc: u64,
    /// Its PSTATE (SPSR_EL1): mode, state, masks.
    pub spsr: u64,
    /// SP_EL0 (AArch64) or SP (r13, AArch32: x13 is also loaded from `x[13]` if set there).
    pub sp: u64,
    /// x0 to x15 (r0 to r14 and the rest for AArch32).
    pub x: [u64; 16],
}

/// How a trip ended: the first exception from EL0 that reached EL1 (and was not an interrupt
/// handled by the IRQ hook).
#[derive(Clone, Copy, Debug, Default)]
pub struct Exit {
    /// The vector entry taken: 8 to 11 from AArch64 EL0 (VBAR_EL1 + 0x400 …), 12 to 15 from
    /// AArch32 EL0 (VBAR_EL1 + 0x600 …); synchronous is 8 or 12.
    pub vector: u64,
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1.
    pub far: u64,
    /// ELR_EL1: the preferred return address.
    pub elr: u64,
    /// SPSR_EL1: EL0's PSTATE.
    pub spsr: u64,
    /// x0 to x30 as EL0 left them.
    pub x: [u64; 31],
}

impl Exit {
    /// The exception class, ESR bits [31:26].
    #[must_use]
    pub const fn class(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static mut EXIT: Exit = Exit {
    vector: 0,
    esr: 0,
    far: 0,
    elr: 0,
    spsr: 0,
    x: [0; 31],
};

unsafe extern "C" {
    fn __capvisor_guest_el0_enter(entry: *const Entry);
    static __capvisor_guest_el0_return: u8;
}

/// Runs EL0 code from `entry` until an exception from EL0 reaches EL1, and says what it was.
///
/// # Safety
/// `entry.pc` must be code that is safe to run at EL0 with these registers: it may touch any
/// memory EL0 can reach (with the MMU off, all of the guest's), and its exception must not be
/// one the guest cannot survive (e.g. an abort in the vector table itself).
pub unsafe fn run(entry: &Entry) -> Exit {
    ACTIVE.store(true, Ordering::Relaxed);
    // SAFETY: the trampoline saves the caller's callee-saved registers, SP and DAIF and puts
    // them back before it returns (through `__capvisor_guest_el0_return`, which `end` makes
    // the exception return to); the caller vouches for the EL0 code.
    unsafe { __capvisor_guest_el0_enter(entry) };
    ACTIVE.store(false, Ordering::Relaxed);
    // SAFETY: written by `end` before the trip returned; single-threaded.
    unsafe { (&raw const EXIT).read() }
}

/// Called by the dispatcher for an exception from a lower EL (vector entries 8 to 15): ends the
/// trip if one is running, recording the exit and making the exception return to the
/// trampoline's return path at EL1h with everything masked.
pub(super) fn end(vector: u64, esr: u64, far: u64, frame: &mut ExceptionFrame) -> bool {
    if !ACTIVE.load(Ordering::Relaxed) {
        return false;
    }
    let exit = Exit {
        vector,
        esr,
        far,
        elr: frame.elr,
        spsr: frame.spsr,
        x: frame.x,
    };
    // SAFETY: single-threaded; `run` reads it after the trip.
    unsafe { (&raw mut EXIT).write(exit) };
    frame.elr = (&raw const __capvisor_guest_el0_return) as u64;
    // EL1h, D, A, I, F masked.
    frame.spsr = 0x3c5;
    true
}

global_asm!(
    r#"
    .section .text.el0, "ax"
    .balign 4
    .global __capvisor_guest_el0_enter
__capvisor_guest_el0_enter:
    adrp    x9, {save}
    add     x9, x9, :lo12:{save}
    stp     x19, x20, [x9, #0]
    stp     x21, x22, [x9, #16]
    stp     x23, x24, [x9, #32]
    stp     x25, x26, [x9, #48]
    stp     x27, x28, [x9, #64]
    stp     x29, x30, [x9, #80]
    mov     x10, sp
    mrs     x11, daif
    stp     x10, x11, [x9, #96]
    ldp     x10, x11, [x0, #0]
    ldr     x12, [x0, #16]
    msr     elr_el1, x10
    msr     spsr_el1, x11
    msr     sp_el0, x12
    ldp     x2, x3, [x0, #40]
    ldp     x4, x5, [x0, #56]
    ldp     x6, x7, [x0, #72]
    ldp     x8, x9, [x0, #88]
    ldp     x10, x11, [x0, #104]
    ldp     x12, x13, [x0, #120]
    ldp     x14, x15, [x0, #136]
    ldp     x0, x1, [x0, #24]
    isb
    eret
    dsb     nsh
    isb

    .global __capvisor_guest_el0_return
__capvisor_guest_el0_return:
    adrp    x9, {save}
    add     x9, x9, :lo12:{save}
    ldp     x19, x20, [x9, #0]
    ldp     x21, x22, [x9, #16]
    ldp     x23, x24, [x9, #32]
    ldp     x25, x26, [x9, #48]
    ldp     x27, x28, [x9, #64]
    ldp     x29, x30, [x9, #80]
    ldp     x10, x11, [x9, #96]
    mov     sp, x10
    msr     daif, x11
    ret
"#,
    save = sym SAVE,
);

/// The caller's x19–x30, SP and DAIF during a trip.
static mut SAVE: [u64; 14] = [0; 14];

const _: () = assert!(core::mem::offset_of!(Entry, x) == 24);
const _: () = assert!(size_of::<Entry>() == 24 + 16 * 8);
