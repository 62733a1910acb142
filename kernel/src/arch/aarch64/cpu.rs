//! Reads of the CPU's identification and control registers.

use aarch64_cpu::registers::{
    CNTHCTL_EL2, HCR_EL2, ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1,
    MDCR_EL2, MIDR_EL1, MPIDR_EL1, Readable,
};
use capvisor_kernel::platform::IdRegisters;
use core::arch::{asm, global_asm};

/// The ID registers the platform description is decoded from.
#[must_use]
pub fn id_registers() -> IdRegisters {
    IdRegisters {
        midr: MIDR_EL1.get(),
        mmfr0: ID_AA64MMFR0_EL1.get(),
        mmfr1: ID_AA64MMFR1_EL1.get(),
        mmfr2: ID_AA64MMFR2_EL1.get(),
        ctr: super::cache::ctr_el0(),
        isar0: ID_AA64ISAR0_EL1.get(),
    }
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

/// Waits in WFI for an interrupt (or another wake-up event); returns after it, or at once if one
/// is pending. A pending interrupt ends the wait even while PSTATE masks it, so the kernel idles
/// with interrupts masked and takes the interrupt afterwards (Arm ARM DDI 0487 L.a, "Wait for
/// Interrupt").
pub fn wait_for_interrupt() {
    // SAFETY: DSB SY completes every memory access issued before (the timer and GIC writes that
    // arm the wake-up among them) before the PE may enter a low-power state; WFI only waits.
    unsafe { asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
}

/// Waits in WFE for an event (SEV, an interrupt, the event stream); may return at once.
pub fn wait_for_event() {
    // SAFETY: WFE only waits.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Executes an UNDEFINED instruction (UDF #0) at EL2: the unexpected-exception handler reports
/// it and stops the machine. For the kernel's self-tests only.
pub fn undefined_instruction() {
    // SAFETY: UDF raises an exception that the handler reports before stopping; it touches
    // nothing.
    unsafe { asm!("udf #0", options(nomem, nostack)) };
}

/// Sets the EL1 registers that govern EL0 to the services' profile (`vcpu::load_service_profile`) at
/// boot, so services run the same before and after any guest: little-endian, the virtual
/// counter readable and equal to the physical count, FP/SIMD trapped by CPTR_EL2.
pub fn enable_el0_counter() {
    super::vcpu::load_service_profile();
}

/// CPTR_EL2's fields with E2H = 0 (Arm ARM D24.2.32). `aarch64-cpu` names only TAM.
mod cptr {
    use aarch64_cpu::registers::CPTR_EL2;

    /// The RES1 bits: 13, 9 and 7:0.
    pub const RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
    /// TZ: SVE instructions and registers trap.
    pub const TZ: u64 = 1 << 8;
    /// TFP: FP/SIMD instructions at any EL below EL2 (and at EL2) trap.
    pub const TFP: u64 = 1 << 10;
    /// TSM: SME instructions and registers trap.
    pub const TSM: u64 = 1 << 12;
    /// TTA: trace register accesses trap.
    pub const TTA: u64 = 1 << 20;
    /// TAM: activity monitor register accesses trap.
    pub const TAM: u64 = CPTR_EL2::TAM::SET.value;
}

/// CPTR_EL2: its RES1 bits, and traps of what the world switch does not switch: SVE (TZ), SME
/// (TSM), the trace registers (TTA) and the activity monitors (TAM), each UNDEFINED for a guest
/// (`capvisor_kernel::vsysreg`). FP/SIMD (TFP) is allowed only while a guest runs (the switch
/// saves its registers); services are soft-float, so [`CPTR_TFP`] traps it for them.
pub const CPTR_EL2: u64 = cptr::RES1 | cptr::TZ | cptr::TSM | cptr::TTA | cptr::TAM;
/// CPTR_EL2.TFP: FP/SIMD instructions at any EL below EL2 (and at EL2) trap.
pub const CPTR_TFP: u64 = cptr::TFP;

/// Traps (`trap`) or allows FP/SIMD: allowed while a guest runs or its FP state is saved or
/// restored, trapped while services run (a service's FP instruction is EC 0x07).
pub fn trap_fp(trap: bool) {
    let value = CPTR_EL2 | if trap { CPTR_TFP } else { 0 };
    // SAFETY: CPTR_EL2 only controls traps; the ISB makes it take effect before the next FP/SIMD
    // instruction.
    unsafe { asm!("msr cptr_el2, {}", "isb", in(reg) value, options(nostack, preserves_flags)) };
}
/// The ID register fields the EL2 configuration depends on, read once.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// ID_AA64PFR0_EL1.
    pub pfr0: u64,
    /// ID_AA64PFR1_EL1.
    pub pfr1: u64,
    /// ID_AA64DFR0_EL1.
    pub dfr0: u64,
    /// ID_AA64MMFR0_EL1.
    pub mmfr0: u64,
    /// ID_AA64MMFR1_EL1.
    pub mmfr1: u64,
}

impl Features {
    /// This CPU's.
    #[must_use]
    pub fn read() -> Self {
        use super::vcpu::read_id_register as id;
        Self {
            pfr0: id(4, 0),
            pfr1: id(4, 1),
            dfr0: id(5, 0),
            mmfr0: id(7, 0),
            mmfr1: id(7, 1),
        }
    }

    fn field(value: u64, shift: u32) -> u64 {
        (value >> shift) & 0xf
    }

    /// FEAT_RAS (ID_AA64PFR0_EL1.RAS ≥ 1).
    #[must_use]
    pub fn ras(&self) -> bool {
        Self::field(self.pfr0, 28) >= 1
    }

    /// PMUVer, 0 when there is no PMU (0xF: an IMPLEMENTATION DEFINED one, none for us).
    fn pmu_version(&self) -> u64 {
        match Self::field(self.dfr0, 8) {
            0xf => 0,
            v => v,
        }
    }
}

/// MDCR_EL2 (D24.2.96), written whole (never ORed into what firmware left, whose E2PB/E2TB could
/// hand the profiling or trace buffer to EL1): HPMN = the PMU's counters (kept as the
/// hardware has them, so EL2 owns none), TPMCR and TPM trap the PMU, TDA, TDOSA and TDRA trap
/// the debug registers (emulated per vCPU: `capvisor_kernel::vsysreg`), TPMS the statistical
/// profiling registers, HPMD and HCCD stop event and cycle counting at EL2, TTRF traps the trace
/// filter, TDCC the debug communications channel; E2PB = E2TB = 0 (EL2 owns the buffers), TDE =
/// 0 (a guest's debug exceptions go to its own EL1; services run with TGE, which makes TDE
/// effective anyway).
fn mdcr_el2(features: &Features) -> u64 {
    let pmu = features.pmu_version();
    let hpmn = if pmu != 0 {
        let pmcr: u64;
        // SAFETY: PMCR_EL0 exists (PMUVer ≠ 0); reading it at EL2 has no side effects.
        unsafe {
            asm!("mrs {}, pmcr_el0", out(reg) pmcr, options(nomem, nostack, preserves_flags))
        };
        // PMCR_EL0.N: the number of event counters.
        (pmcr >> 11) & 0x1f
    } else {
        0
    };
    let mut mdcr = MDCR_EL2::HPMN.val(hpmn).value
        | MDCR_EL2::TPMCR::SET.value
        | MDCR_EL2::TPM::SET.value
        | MDCR_EL2::TDA::SET.value
        | MDCR_EL2::TDOSA::SET.value
        | MDCR_EL2::TDRA::SET.value;
    // ID_AA64DFR0_EL1.PMSVer: the statistical profiling extension.
    if Features::field(features.dfr0, 32) >= 1 {
        mdcr |= MDCR_EL2::TPMS::SET.value;
    }
    // PMUv3p1.
    if pmu >= 4 {
        mdcr |= MDCR_EL2::HPMD::SET.value;
    }
    // ID_AA64DFR0_EL1.TraceFilt: FEAT_TRF.
    if Features::field(features.dfr0, 40) >= 1 {
        mdcr |= MDCR_EL2::TTRF::SET.value;
    }
    // PMUv3p5.
    if pmu >= 6 {
        mdcr |= MDCR_EL2::HCCD::SET.value;
    }
    // ID_AA64MMFR0_EL1.FGT: FEAT_FGT, with which TDCC exists.
    if Features::field(features.mmfr0, 56) >= 1 {
        mdcr |= MDCR_EL2::TDCC::SET.value;
    }
    mdcr
}

/// HCR_EL2 bits for guests that depend on the features present (setting one whose feature is
/// absent would write a RES0 bit): TACR always (ACTLR_EL1 is implementation defined and not
/// switched: read as zero), TLOR with LORegions, TERR and TEA with RAS (error records are not
/// switched; synchronous external aborts are EL2's to judge), TID5 with MTE2 (GMID_EL1). Arm ARM
/// D24.2.48.
#[must_use]
pub fn guest_hcr_extra(features: &Features) -> u64 {
    let mut hcr = HCR_EL2::TACR::SET.value;
    // ID_AA64MMFR1_EL1.LO: FEAT_LOR.
    if Features::field(features.mmfr1, 16) >= 1 {
        hcr |= HCR_EL2::TLOR::SET.value;
    }
    if features.ras() {
        hcr |= HCR_EL2::TERR::SET.value | HCR_EL2::TEA::SET.value;
    }
    // ID_AA64PFR1_EL1.MTE: FEAT_MTE2.
    if Features::field(features.pfr1, 8) >= 2 {
        hcr |= HCR_EL2::TID5::SET.value;
    }
    hcr
}

/// The mitigations `lower_common` applies on every exception from a lower EL, in one word: bits
/// [31:0] the iterations of the branch-history clearing loop (0: none needed), bit 32 set when
/// the CPU has FEAT_RAS (SErrors are synchronised with ESB and DISR_EL1, else with an unmasked
/// window). Set at boot ([`set_mitigations`]).
#[unsafe(no_mangle)]
pub static mut ENTRY_MITIGATIONS: u64 = 0;

/// The branch-history clearing loop a CPU needs on entry to EL2 from a lower EL (Spectre-BHB,
/// CVE-2022-23960): none with FEAT_CSV2_3 (ID_AA64PFR0_EL1.CSV2 = 3) or FEAT_ECBHB
/// (ID_AA64MMFR1_EL1.ECBHB), else k iterations by part, as Arm's published list gives them —
/// 8 for Cortex-A57/A72, 24 for Cortex-A76/A77 and Neoverse N1, 32 for Cortex-A78 (AE, C),
/// X1, X2, A710, Neoverse N2 and V1 — and 32 for a part not listed.
#[must_use]
pub fn bhb_iterations(midr: u64, features: &Features) -> u32 {
    if Features::field(features.pfr0, 56) >= 3 || Features::field(features.mmfr1, 60) >= 1 {
        return 0;
    }
    let (implementer, part) = ((midr >> 24) & 0xff, (midr >> 4) & 0xfff);
    match (implementer, part) {
        (0x41, 0xd07 | 0xd08) => 8,
        (0x41, 0xd0b..=0xd0d) => 24,
        _ => 32,
    }
}

/// Sets the exception-entry mitigations for this machine (boot, before any lower EL runs).
pub fn set_mitigations(features: &Features) {
    let midr: u64;
    // SAFETY: reading MIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, midr_el1", out(reg) midr, options(nomem, nostack, preserves_flags)) };
    let word = u64::from(bhb_iterations(midr, features)) | (u64::from(features.ras()) << 32);
    // SAFETY: written on CPU 0 at boot, before any exception from a lower EL reads it.
    unsafe { ENTRY_MITIGATIONS = word };
}

/// Sets this CPU's EL2 controls of everything below EL2 to capvisor's values, each register
/// written whole (their reset values are UNKNOWN, and firmware may leave anything):
/// - CPTR_EL2 ([`CPTR_EL2`], FP/SIMD trapped until a guest's state is loaded);
/// - MDCR_EL2 ([`mdcr_el2`]);
/// - HCRX_EL2 = 0 with FEAT_HCX: every feature it enables stays off (LS64, MOPS, TCR2/SCTLR2,
///   GCS, FPMR… trap or UNDEF), D24.2.49;
/// - the fine-grained trap registers = 0 with FEAT_FGT (and FGT2): no positive fine-grained trap,
///   and every feature its n-bits gate (newer than capvisor) trapped (D24.2.5x);
/// - VPIDR_EL2 = MIDR_EL1: a guest reads the real part number (errata, Spectre decisions);
/// - CNTHCTL_EL2 = EL1PCTEN only: the physical counter is readable below EL2, the EL1 physical
///   timer traps (it is emulated per vCPU), no event stream (D24.2.20, E2H = 0 layout);
/// - the debug state: the OS Lock cleared (QEMU resets it set, which would stop every debug
///   exception), MDSCR_EL1 and every breakpoint and watchpoint control cleared.
///
/// Precondition (booting.rst's contract for a kernel entered at EL2): EL3, if present, set
/// SCR_EL3.FGTEn and HXEn, so these registers do not trap to EL3.
pub fn configure_el2(features: &Features) {
    let mdcr = mdcr_el2(features);
    // SAFETY: these registers control traps and identification for lower ELs only; the kernel
    // itself uses none of what they govern.
    unsafe {
        asm!(
            "msr cptr_el2, {cptr}",
            "msr mdcr_el2, {mdcr}",
            "mrs {t}, midr_el1",
            "msr vpidr_el2, {t}",
            "msr cnthctl_el2, {cnthctl}",
            "msr oslar_el1, xzr",
            "msr mdscr_el1, xzr",
            "isb",
            cptr = in(reg) CPTR_EL2 | CPTR_TFP,
            mdcr = in(reg) mdcr,
            cnthctl = in(reg) CNTHCTL_EL2::EL1PCTEN::SET.value,
            t = out(reg) _,
            options(nostack, preserves_flags)
        );
    }
    if features.pmu_version() != 0 {
        // PMUSERENR_EL0.EN: EL0's PMU accesses are not trapped to EL1 by it, so they reach
        // MDCR_EL2.TPM and EL2, which makes them UNDEFINED for a guest (its PMU is hidden) —
        // the PMUSERENR_EL0 check comes first in the Arm ARM's access pseudocode. A guest's
        // writes of PMUSERENR_EL0 itself trap (TPM) and are UNDEFINED too.
        // SAFETY: PMUSERENR_EL0 exists (PMUVer ≠ 0); only EL0 accesses are affected, and they
        // all trap to EL2.
        unsafe { asm!("msr pmuserenr_el0, {}", in(reg) 1u64, options(nostack, preserves_flags)) };
    }
    if Features::field(features.mmfr1, 40) >= 1 {
        // SAFETY: HCRX_EL2 exists (FEAT_HCX).
        unsafe {
            asm!(
                "msr s3_4_c1_c2_2, xzr",
                "isb",
                options(nostack, preserves_flags)
            )
        };
    }
    let fgt = Features::field(features.mmfr0, 56);
    if fgt >= 1 {
        // SAFETY: HFGRTR/HFGWTR/HFGITR/HDFGRTR/HDFGWTR_EL2 exist (FEAT_FGT).
        unsafe {
            asm!(
                "msr s3_4_c1_c1_4, xzr",
                "msr s3_4_c1_c1_5, xzr",
                "msr s3_4_c1_c1_6, xzr",
                "msr s3_4_c3_c1_4, xzr",
                "msr s3_4_c3_c1_5, xzr",
                "isb",
                options(nostack, preserves_flags)
            );
        }
        if Features::field(features.pfr0, 44) >= 1 {
            // SAFETY: HAFGRTR_EL2 exists (FEAT_FGT with FEAT_AMUv1).
            unsafe {
                asm!(
                    "msr s3_4_c3_c1_6, xzr",
                    "isb",
                    options(nostack, preserves_flags)
                )
            };
        }
    }
    if fgt >= 2 {
        // SAFETY: the FGT2 registers exist (FEAT_FGT2).
        unsafe {
            asm!(
                "msr s3_4_c3_c1_0, xzr",
                "msr s3_4_c3_c1_1, xzr",
                "msr s3_4_c3_c1_2, xzr",
                "msr s3_4_c3_c1_3, xzr",
                "msr s3_4_c3_c1_7, xzr",
                "isb",
                options(nostack, preserves_flags)
            );
        }
    }
    super::vcpu::clear_debug_registers(features);
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
