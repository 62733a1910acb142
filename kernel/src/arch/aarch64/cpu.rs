//! Reads of the CPU's identification and control registers.

use aarch64_cpu::registers::{
    ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1, MIDR_EL1, MPIDR_EL1,
    Readable,
};
use core::arch::{asm, global_asm};

/// CTR_EL0 (not among `aarch64-cpu`'s registers).
fn ctr_el0() -> u64 {
    let value: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}
use capvisor_kernel::platform::IdRegisters;

/// The ID registers the platform description is decoded from.
#[must_use]
pub fn id_registers() -> IdRegisters {
    IdRegisters {
        midr: MIDR_EL1.get(),
        mmfr0: ID_AA64MMFR0_EL1.get(),
        mmfr1: ID_AA64MMFR1_EL1.get(),
        mmfr2: ID_AA64MMFR2_EL1.get(),
        ctr: ctr_el0(),
        isar0: ID_AA64ISAR0_EL1.get(),
    }
}

/// The smallest data cache line, from CTR_EL0.DminLine (log2 of words), in bytes.
#[must_use]
pub fn dcache_line_size() -> usize {
    4 << ((ctr_el0() >> 16) & 0xf)
}

/// This CPU's affinity (MPIDR_EL1 Aff3..Aff0), as PSCI and the device tree name it.
#[must_use]
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// The generic counter's frequency (CNTFRQ_EL0), in Hz.
#[must_use]
pub fn counter_frequency() -> u64 {
    let value: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The physical count (CNTPCT_EL0), after an ISB so it is not read early.
#[must_use]
pub fn physical_counter() -> u64 {
    let value: u64;
    // SAFETY: reading the counter has no side effects.
    unsafe {
        asm!("isb", "mrs {}, cntpct_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Sets the EL1 registers that govern EL0 to the services' profile ([`vcpu::SERVICE_EL0`]) at
/// boot, so services run the same before and after any guest: little-endian, the virtual
/// counter readable and equal to the physical count, FP/SIMD trapped by CPTR_EL2.
pub fn enable_el0_counter() {
    super::vcpu::load_service_profile();
}

/// CPTR_EL2 with E2H = 0 (Arm ARM D24.2.32): its RES1 bits (13, 9, 7:0), and traps of what the
/// world switch does not switch: TZ (8) SVE, TSM (12) SME, TTA (20) trace registers, TAM (30)
/// activity monitors. FP/SIMD (TFP, 10) is allowed only while a guest runs (the switch saves
/// its registers); services are soft-float, so [`CPTR_TFP`] traps it for them.
pub const CPTR_EL2: u64 =
    (1 << 13) | (1 << 9) | 0xff | (1 << 8) | (1 << 12) | (1 << 20) | (1 << 30);
/// CPTR_EL2.TFP: FP/SIMD instructions at any EL below EL2 (and at EL2) trap.
pub const CPTR_TFP: u64 = 1 << 10;

/// Traps (`trap`) or allows FP/SIMD: allowed while a guest runs or its FP state is saved or
/// restored, trapped while services run (a service's FP instruction is EC 0x07).
pub fn trap_fp(trap: bool) {
    let value = CPTR_EL2 | if trap { CPTR_TFP } else { 0 };
    // SAFETY: CPTR_EL2 only controls traps; the ISB makes it take effect before the next FP/SIMD
    // instruction.
    unsafe { asm!("msr cptr_el2, {}", "isb", in(reg) value, options(nostack, preserves_flags)) };
}
/// MDCR_EL2 trap bits (D24.2.96): TPMCR (5) and TPM (6) the PMU, TDA (9) the debug registers
/// (MDSCR_EL1, breakpoints, watchpoints), TDOSA (10) the OS lock, TDRA (11) the debug ROM, TTRF
/// (19) the trace filter. Their state is not switched, so a guest must not reach it: a trapped
/// access goes to its VMM (read as zero, writes ignored). HPMN and E2PB are left as they are.
pub const MDCR_EL2_TRAPS: u64 = (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 19);

/// Sets the EL2 traps of state that no world switch saves (SVE, SME, trace, activity monitors,
/// debug, PMU) for everything below EL2 — guests and services alike — so none of it can leak
/// from one to another.
pub fn trap_unswitched_state() {
    // SAFETY: CPTR_EL2 and MDCR_EL2 only control traps of lower ELs; the kernel itself uses
    // none of the trapped state.
    unsafe {
        asm!(
            "msr cptr_el2, {cptr}",
            "mrs {mdcr}, mdcr_el2",
            "orr {mdcr}, {mdcr}, {traps}",
            "msr mdcr_el2, {mdcr}",
            "isb",
            cptr = in(reg) CPTR_EL2 | CPTR_TFP,
            traps = in(reg) MDCR_EL2_TRAPS,
            mdcr = out(reg) _,
            options(nostack, preserves_flags)
        );
    }
}

/// Zeroes `[start, start + size)` of kernel-mapped Normal memory with DC ZVA, a whole block per
/// instruction (DCZID_EL0.BS, Arm ARM D24.2.36), falling back to stores where DC ZVA is
/// prohibited (DCZID_EL0.DZP) or the range is not block aligned.
///
/// # Safety
/// The range must be Normal memory the kernel maps writable that nothing else uses meanwhile.
pub unsafe fn zero(start: u64, size: u64) {
    let dczid: u64;
    // SAFETY: reading DCZID_EL0 has no side effects.
    unsafe { asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack, preserves_flags)) };
    let block = 4u64 << (dczid & 0xf);
    let aligned = (start | size) & (block - 1) == 0;
    if dczid & (1 << 4) != 0 || !aligned {
        // SAFETY: the caller's contract.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, size as usize) };
        return;
    }
    // Eight blocks per iteration while at least eight are left: the loop's compare and branch
    // cost as much as the DC ZVA itself (a 2 MiB frame is 32,768 blocks of 64 bytes).
    let end = start + size;
    let mut at = start;
    while end - at >= 8 * block {
        // SAFETY: `at + n * block` for n < 8 are block-aligned addresses inside the caller's
        // range (at least eight blocks are left).
        unsafe {
            asm!(
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                "dc zva, {a}",
                "add {a}, {a}, {b}",
                a = inout(reg) at,
                b = in(reg) block,
                options(nostack, preserves_flags)
            );
        }
    }
    while at < end {
        // SAFETY: `at` is a block-aligned address inside the caller's range.
        unsafe { asm!("dc zva, {}", in(reg) at, options(nostack, preserves_flags)) };
        at += block;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

// `memset` for the kernel, replacing `compiler_builtins`' portable one (a weak symbol), which
// stores one word per loop iteration: this stores 64 bytes per iteration with STP once the
// address is 8-byte aligned, and the last bytes with one store each of 4, 2 and 1 bytes. Every
// store is aligned to its size, so it is safe wherever the portable one was (Arm ARM DDI 0487
// L.a, B2.5.2 "Alignment of data accesses").
global_asm!(
    r#"
    .section .text.mem, "ax"
    .global memset
    .type memset, %function
memset:
    mov     x3, x0
    and     x1, x1, #0xff
    mov     x4, #0x0101010101010101
    mul     x1, x1, x4
1:  tst     x3, #7
    b.eq    2f
    cbz     x2, 5f
    strb    w1, [x3], #1
    sub     x2, x2, #1
    b       1b
2:  cmp     x2, #64
    b.lo    3f
    stp     x1, x1, [x3]
    stp     x1, x1, [x3, #16]
    stp     x1, x1, [x3, #32]
    stp     x1, x1, [x3, #48]
    add     x3, x3, #64
    sub     x2, x2, #64
    b       2b
3:  cmp     x2, #8
    b.lo    4f
    str     x1, [x3], #8
    sub     x2, x2, #8
    b       3b
    /* 8-byte aligned, fewer than 8 bytes left. */
4:  tbz     x2, #2, 6f
    str     w1, [x3], #4
6:  tbz     x2, #1, 7f
    strh    w1, [x3], #2
7:  tbz     x2, #0, 5f
    strb    w1, [x3]
5:  ret
    .size memset, . - memset
"#
);
