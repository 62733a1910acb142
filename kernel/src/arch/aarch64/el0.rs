//! Running threads at EL0 and taking their exceptions: the per-CPU record, a thread's saved
//! context, the lower-EL vector path and the return to EL0.
//!
//! Services run with HCR_EL2.{VM, TGE, DC} (and RW) set, as seL4 runs native threads on ARMv8.0
//! without VHE (DESIGN "How EL0 services run"): every EL0 exception is taken to EL2 (TGE), stage
//! 1 of EL1&0 is off and its memory type is Normal write-back (DC, Arm ARM D24.2.48 HCR_EL2.DC),
//! and the service's address space is a stage-2 table tagged with its own VMID (VM). With
//! HCR_EL2.E2H = 0 none of these is overridden (DC is ignored only when {E2H, TGE} = {1, 1}).

use aarch64_cpu::registers::HCR_EL2;
use core::arch::{asm, global_asm};

pub use capvisor_kernel::context::ThreadContext;

/// HCR_EL2 for a service thread: RW (EL1 is AArch64), VM, TGE, DC; E2H clear. Also TSC (SMC
/// traps to EL2) so a service cannot call firmware directly.
pub const HCR_SERVICE: u64 = HCR_EL2::RW::EL1IsAarch64.value
    | HCR_EL2::VM::SET.value
    | HCR_EL2::TGE::SET.value
    | HCR_EL2::DC::SET.value
    | HCR_EL2::TSC::SET.value;
/// HCR_EL2.TGE: set for services, clear for guests (so it tells which one trapped).
pub const HCR_TGE: u64 = HCR_EL2::TGE::SET.value;
/// HCR_EL2.FWB: set for services and guests alike when the stage-2 descriptors use the
/// FEAT_S2FWB encoding.
pub const HCR_FWB: u64 = HCR_EL2::FWB::SET.value;

/// Per-CPU data; TPIDR_EL2 holds its address. `current` is first: the vector code reads it.
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// The context the lower-EL vectors save into.
    pub current: *mut ThreadContext,
    /// This CPU's index.
    pub index: u64,
    /// The top of this CPU's kernel stack.
    pub stack_top: u64,
}

/// This CPU's [`PerCpu`] record (TPIDR_EL2 holds its address; null before [`set_per_cpu`]).
#[must_use]
#[inline]
pub fn per_cpu() -> *mut PerCpu {
    let value: u64;
    // SAFETY: reading TPIDR_EL2 has no side effects.
    unsafe { asm!("mrs {}, tpidr_el2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value as *mut PerCpu
}

/// Publishes `record` as this CPU's [`PerCpu`] record in TPIDR_EL2.
///
/// # Safety
/// `record` is this CPU's record, initialised, and valid for as long as the CPU runs: the
/// lower-EL vectors save a thread's registers through it.
pub unsafe fn set_per_cpu(record: *mut PerCpu) {
    // SAFETY: TPIDR_EL2 is the kernel's own per-CPU word; nothing else uses it. No `nomem`: the
    // record's initialising stores stay before the write that publishes it.
    unsafe { asm!("msr tpidr_el2, {}", in(reg) record, options(nostack, preserves_flags)) };
}

/// Loads the translation a thread runs under: HCR_EL2 (a service's VM + TGE + DC, or a guest's
/// controls) and VTTBR_EL2 (its space's tables and VMID), then ISB, so both are in force before
/// the thread's context is restored and entered.
///
/// # Safety
/// `hcr` and `vttbr` are the thread's: the tables are a live space's, built for VTCR_EL2, and
/// its VMID is not used by another live translation; the kernel enters that thread next.
#[inline]
pub unsafe fn set_translation(hcr: u64, vttbr: u64) {
    // SAFETY: the caller's contract; the ISB makes the values take effect before the ERET.
    unsafe {
        asm!(
            "msr hcr_el2, {hcr}",
            "msr vttbr_el2, {vttbr}",
            "isb",
            hcr = in(reg) hcr,
            vttbr = in(reg) vttbr,
            options(nostack, preserves_flags)
        );
    }
}

global_asm!(
    r#"
    .section .text.el0, "ax"
    /* Lower-EL entry (from the vector table): x0, x1 were pushed; x1 = vector kind. Saves the
       thread's registers into PerCpu.current, pops the stack back to its top, clears the branch
       history where the CPU needs it (Spectre-BHB), takes the exit's syndrome and synchronises
       a pending SError (so it is blamed on the context that just exited, not on the next one),
       and calls handle_lower_exception(context, kind, esr, far, serror), which never returns
       (it leaves by enter_el0). */
    .global lower_common
lower_common:
    mrs     x0, tpidr_el2
    ldr     x0, [x0]
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    mrs     x2, sp_el0
    stp     x30, x2, [x0, #240]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #256]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    /* One word of entry mitigations (cpu::ENTRY_MITIGATIONS): bits [31:0] the Spectre-BHB loop
       count, bit 32 FEAT_RAS. */
    adrp    x5, {mitigations}
    ldr     x5, [x5, :lo12:{mitigations}]
    cbnz    w5, 7f
2:  mrs     x2, esr_el2
    mrs     x3, far_el2
    tbz     x5, #32, 4f
    /* With RAS: ESB defers a pending SError into DISR_EL1 (PSTATE.A is masked here). */
    hint    #16                 /* ESB */
    mrs     x4, s3_0_c12_c1_1   /* DISR_EL1 */
    cbz     x4, 5f
    msr     s3_0_c12_c1_1, xzr
    b       5f
    /* Spectre-BHB: k taken branches replace the branch history the lower EL left, before the
       kernel's first indirect branch (a RET). */
7:  mov     w6, w5
1:  b       3f
3:  subs    w6, w6, #1
    b.ne    1b
    dsb     nsh
    isb
    b       2b
    /* Without RAS: a pending SError is taken in this window; the vector records its syndrome
       in x4 and returns to its end (exceptions.rs, vector 7). */
4:  mov     x4, xzr
    dsb     sy
    .global serror_window
serror_window:
    msr     daifclr, #4
    isb
    msr     daifset, #4
    .global serror_window_end
serror_window_end:
5:  bl      handle_lower_exception
    b       .

    /* enter_el0(context, stack_top): resets this CPU's kernel stack and returns to the thread. */
    .global enter_el0
enter_el0:
    mov     sp, x1
    ldp     x2, x3, [x0, #248]
    msr     sp_el0, x2
    msr     elr_el2, x3
    ldr     x2, [x0, #264]
    msr     spsr_el2, x2
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
    /* No straight-line speculation past the ERET. */
    dsb     nsh
    isb
"#,
    mitigations = sym super::cpu::ENTRY_MITIGATIONS,
);

unsafe extern "C" {
    /// Restores `context` and returns to EL0, with this CPU's kernel stack reset to `stack_top`.
    ///
    /// # Safety
    ///
    /// HCR_EL2 and VTTBR_EL2 must be set for the thread, and PerCpu.current must point at
    /// `context` (its exceptions are saved there). Nothing on the current stack stays valid.
    pub fn enter_el0(context: *const ThreadContext, stack_top: u64) -> !;
}
