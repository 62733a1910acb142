//! A vCPU's EL1 state and the world switch's register work: saving and restoring the EL1 system
//! registers, the virtual timer, CNTVOFF_EL2 and FP/SIMD.
//!
//! The switch is lazy: the CPU keeps the last guest's EL1 state loaded while EL0 services run
//! (services run with HCR_EL2.TGE = 1 and E2H = 0, so EL1 is never entered and its registers are
//! not used by them; Arm ARM D1.6 "Effective value of HCR_EL2.TGE"), and it is saved only when
//! another vCPU is entered or the kernel needs the state in memory (register access, abort
//! injection). The registers are those a guest at EL1 owns in the EL1&0 regime: the list of
//! KVM/arm64's `sys_regs` context for a non-VHE host, minus what capvisor traps or does not expose
//! (debug, PMU, pointer authentication, MTE, SVE).

use aarch64_cpu::registers::HCR_EL2;
use core::arch::{asm, global_asm};

pub use capvisor_kernel::context::{El1State, MPIDR_RESET, MPIDR_WRITABLE, PSTATE_RESET, sys};
use capvisor_kernel::vsysreg::{DebugState, Hardware};

/// SCTLR_EL1 for services at EL0 (HCR_EL2.TGE = 1, E2H = 0 leaves every EL0 control of it in
/// force but M; Arm ARM D24.2.48 TGE, D24.2.161 SCTLR_EL1): its RES1 bits (29, 28, 23, 22, 20,
/// 11) plus C (2), SA0 (4), I (12), DZE (14), UCT (15), nTWI (16) and nTWE (18); E0E = 0
/// (little-endian), A = 0 (no alignment faults), UCI = 0 (no cache maintenance from EL0), the
/// pointer-authentication enables clear.
pub const SERVICE_SCTLR: u64 = 0x30d5_d814;
/// CNTKCTL_EL1 for services: EL0VCTEN only (the virtual counter, no timers, no event stream).
pub const SERVICE_CNTKCTL: u64 = 1 << 1;
/// CPACR_EL1 for services: FPEN = 0b11, so FP/SIMD traps by CPTR_EL2.TFP (EC 0x07), not by
/// CPACR (which would arrive as EC 0x00 under TGE).
pub const SERVICE_CPACR: u64 = 0b11 << 20;

/// The EL0-visible registers of the guest whose EL1 state is loaded, kept while services run
/// with their own profile in those registers.
#[derive(Clone, Copy, Debug)]
pub struct Parked {
    sctlr: u64,
    cntkctl: u64,
    cpacr: u64,
    cntvoff: u64,
    tpidr_el0: u64,
    tpidrro_el0: u64,
}

/// Keeps the loaded guest's EL0-visible registers and loads the services' profile: SCTLR_EL1,
/// CNTKCTL_EL1, CPACR_EL1 as above, CNTVOFF_EL2 = 0 (services' virtual count is the physical
/// count), TPIDR_EL0 = TPIDRRO_EL0 = 0, and FP/SIMD trapped (the guest's registers stay in the
/// CPU, out of the services' reach).
#[must_use]
pub fn park() -> Parked {
    let (sctlr, cntkctl, cpacr, cntvoff, tpidr, tpidrro): (u64, u64, u64, u64, u64, u64);
    // SAFETY: reading EL1 and EL2 system registers has no side effects.
    unsafe {
        asm!(
            "mrs {0}, sctlr_el1",
            "mrs {1}, cntkctl_el1",
            "mrs {2}, cpacr_el1",
            "mrs {3}, cntvoff_el2",
            "mrs {4}, tpidr_el0",
            "mrs {5}, tpidrro_el0",
            out(reg) sctlr,
            out(reg) cntkctl,
            out(reg) cpacr,
            out(reg) cntvoff,
            out(reg) tpidr,
            out(reg) tpidrro,
            options(nomem, nostack, preserves_flags)
        );
    }
    load_service_profile();
    Parked {
        sctlr,
        cntkctl,
        cpacr,
        cntvoff,
        tpidr_el0: tpidr,
        tpidrro_el0: tpidrro,
    }
}

/// Writes the services' EL0 profile (see [`park`]) and traps FP/SIMD.
pub fn load_service_profile() {
    // SAFETY: these registers govern only the EL1&0 regime, which services use at EL0; the ISB
    // makes them take effect before the next ERET.
    unsafe {
        asm!(
            "msr sctlr_el1, {sctlr}",
            "msr cntkctl_el1, {cntkctl}",
            "msr cpacr_el1, {cpacr}",
            "msr cntvoff_el2, xzr",
            "msr tpidr_el0, xzr",
            "msr tpidrro_el0, xzr",
            "isb",
            sctlr = in(reg) SERVICE_SCTLR,
            cntkctl = in(reg) SERVICE_CNTKCTL,
            cpacr = in(reg) SERVICE_CPACR,
            options(nostack, preserves_flags)
        );
    }
    super::cpu::trap_fp(true);
}

/// Clears the EL0 thread registers (another service thread runs next: no channel between them).
pub fn clear_thread_registers() {
    // SAFETY: TPIDR_EL0/TPIDRRO_EL0 are software thread IDs with no effect on the kernel.
    unsafe {
        asm!(
            "msr tpidr_el0, xzr",
            "msr tpidrro_el0, xzr",
            options(nostack, preserves_flags)
        )
    };
}

/// Puts back the loaded guest's registers [`park`] kept, and allows FP/SIMD again.
pub fn unpark(parked: &Parked) {
    // SAFETY: the guest's own values, which it had when it left; ISB before it runs.
    unsafe {
        asm!(
            "msr sctlr_el1, {}",
            "msr cntkctl_el1, {}",
            "msr cpacr_el1, {}",
            "msr cntvoff_el2, {}",
            "msr tpidr_el0, {}",
            "msr tpidrro_el0, {}",
            "isb",
            in(reg) parked.sctlr,
            in(reg) parked.cntkctl,
            in(reg) parked.cpacr,
            in(reg) parked.cntvoff,
            in(reg) parked.tpidr_el0,
            in(reg) parked.tpidrro_el0,
            options(nostack, preserves_flags)
        );
    }
    super::cpu::trap_fp(false);
}

// The save and restore sequences. System registers are stored in `sys` order; `.arch_extension
// fp` lets the kernel (built soft-float) name the FP/SIMD registers here, and only here.
global_asm!(
    r#"
    .section .text.vcpu, "ax"
    .arch_extension fp
    .arch_extension simd

    /* vcpu_save(state: *mut El1State) */
    .global vcpu_save
vcpu_save:
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpcr
    mrs     x2, fpsr
    add     x0, x0, #512
    stp     x1, x2, [x0], #16
    mrs     x1, sctlr_el1
    mrs     x2, ttbr0_el1
    stp     x1, x2, [x0, #0]
    mrs     x1, ttbr1_el1
    mrs     x2, tcr_el1
    stp     x1, x2, [x0, #16]
    mrs     x1, mair_el1
    mrs     x2, amair_el1
    stp     x1, x2, [x0, #32]
    mrs     x1, vbar_el1
    mrs     x2, contextidr_el1
    stp     x1, x2, [x0, #48]
    mrs     x1, tpidr_el1
    mrs     x2, tpidr_el0
    stp     x1, x2, [x0, #64]
    mrs     x1, tpidrro_el0
    mrs     x2, sp_el1
    stp     x1, x2, [x0, #80]
    mrs     x1, elr_el1
    mrs     x2, spsr_el1
    stp     x1, x2, [x0, #96]
    mrs     x1, esr_el1
    mrs     x2, far_el1
    stp     x1, x2, [x0, #112]
    mrs     x1, afsr0_el1
    mrs     x2, afsr1_el1
    stp     x1, x2, [x0, #128]
    mrs     x1, par_el1
    mrs     x2, cpacr_el1
    stp     x1, x2, [x0, #144]
    mrs     x1, cntkctl_el1
    mrs     x2, csselr_el1
    stp     x1, x2, [x0, #160]
    mrs     x1, cntv_ctl_el0
    mrs     x2, cntv_cval_el0
    stp     x1, x2, [x0, #176]
    mrs     x1, cntvoff_el2
    mrs     x2, vmpidr_el2
    stp     x1, x2, [x0, #192]
    /* The guest's virtual timer must not fire for it while it is out. */
    msr     cntv_ctl_el0, xzr
    isb
    ret

    /* vcpu_restore(state: *const El1State) */
    .global vcpu_restore
vcpu_restore:
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    add     x0, x0, #512
    ldp     x1, x2, [x0], #16
    msr     fpcr, x1
    msr     fpsr, x2
    ldp     x1, x2, [x0, #0]
    msr     sctlr_el1, x1
    msr     ttbr0_el1, x2
    ldp     x1, x2, [x0, #16]
    msr     ttbr1_el1, x1
    msr     tcr_el1, x2
    ldp     x1, x2, [x0, #32]
    msr     mair_el1, x1
    msr     amair_el1, x2
    ldp     x1, x2, [x0, #48]
    msr     vbar_el1, x1
    msr     contextidr_el1, x2
    ldp     x1, x2, [x0, #64]
    msr     tpidr_el1, x1
    msr     tpidr_el0, x2
    ldp     x1, x2, [x0, #80]
    msr     tpidrro_el0, x1
    msr     sp_el1, x2
    ldp     x1, x2, [x0, #96]
    msr     elr_el1, x1
    msr     spsr_el1, x2
    ldp     x1, x2, [x0, #112]
    msr     esr_el1, x1
    msr     far_el1, x2
    ldp     x1, x2, [x0, #128]
    msr     afsr0_el1, x1
    msr     afsr1_el1, x2
    ldp     x1, x2, [x0, #144]
    msr     par_el1, x1
    msr     cpacr_el1, x2
    ldp     x1, x2, [x0, #160]
    msr     cntkctl_el1, x1
    msr     csselr_el1, x2
    ldp     x1, x2, [x0, #192]
    msr     cntvoff_el2, x1
    msr     vmpidr_el2, x2
    ldp     x1, x2, [x0, #176]
    msr     cntv_cval_el0, x2
    msr     cntv_ctl_el0, x1
    isb
    ret
"#
);

unsafe extern "C" {
    fn vcpu_save(state: *mut El1State);
    fn vcpu_restore(state: *const El1State);
}

/// Saves the CPU's EL1 state into `state`.
// Inlined, as LLVM chose before the boot builder left the kernel: out of line it costs the
// guest exit and interrupt paths instructions (`docs/benchmarks.md`, issue 15).
#[inline]
pub fn save(state: &mut El1State) {
    super::cpu::trap_fp(false);
    // SAFETY: reads EL1 system and FP/SIMD registers (accessible at EL2, FP/SIMD allowed just
    // above) into `state`, and disables the virtual timer (the guest's copy of CNTV_CTL is saved
    // first).
    unsafe { vcpu_save(state) }
}

/// Loads `state` into the CPU's EL1 registers.
// Inlined, as LLVM chose before the boot builder left the kernel: out of line it costs the
// guest exit and interrupt paths instructions (`docs/benchmarks.md`, issue 15).
#[inline]
pub fn restore(state: &El1State) {
    super::cpu::trap_fp(false);
    // SAFETY: writes EL1 system and FP/SIMD registers (FP/SIMD allowed just above), which only
    // the EL1&0 regime uses; the caller enters the guest next (and parks its EL0-visible
    // registers before any service runs).
    unsafe { vcpu_restore(state) }
}

/// `write_debug(kind, n, value)`: DBGBVR<n>_EL1 (kind 4), DBGBCR<n>_EL1 (5), DBGWVR<n>_EL1 (6) or
/// DBGWCR<n>_EL1 (7) — op0 2, op1 0, CRn 0, CRm n, op2 kind; one MSR encoding each.
macro_rules! debug_register_writer {
    ($($n:literal),*) => {
        fn write_debug(kind: u8, n: usize, value: u64) {
            // SAFETY: writing an implemented breakpoint or watchpoint register (the caller
            // bounds `n` by the hardware's count) affects only debug events of lower ELs whose
            // MDSCR_EL1 enables them.
            unsafe {
                match (kind, n) {
                    $(
                        (4, $n) => asm!(concat!("msr S2_0_C0_C", stringify!($n), "_4, {}"), in(reg) value, options(nostack, preserves_flags)),
                        (5, $n) => asm!(concat!("msr S2_0_C0_C", stringify!($n), "_5, {}"), in(reg) value, options(nostack, preserves_flags)),
                        (6, $n) => asm!(concat!("msr S2_0_C0_C", stringify!($n), "_6, {}"), in(reg) value, options(nostack, preserves_flags)),
                        (7, $n) => asm!(concat!("msr S2_0_C0_C", stringify!($n), "_7, {}"), in(reg) value, options(nostack, preserves_flags)),
                    )*
                    _ => {}
                }
            }
        }
    };
}

debug_register_writer!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

/// Loads a vCPU's breakpoints and watchpoints into the hardware (the first `hardware.breakpoints`
/// and `hardware.watchpoints` of each).
pub fn load_debug(state: &DebugState, hardware: &Hardware) {
    for n in 0..hardware.breakpoints {
        write_debug(4, n, state.bvr[n]);
        write_debug(5, n, state.bcr[n]);
    }
    for n in 0..hardware.watchpoints {
        write_debug(6, n, state.wvr[n]);
        write_debug(7, n, state.wcr[n]);
    }
    // SAFETY: a barrier, so the registers are in effect before the guest runs.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// VDISR_EL2 (FEAT_RAS only), then cleared: the loaded guest's DISR_EL1 (with HCR_EL2.AMO set,
/// EL1 accesses to DISR_EL1 reach VDISR_EL2; D24.2.214), so no other guest reads it.
pub fn take_vdisr() -> u64 {
    let value: u64;
    // SAFETY: VDISR_EL2 exists (the caller checked FEAT_RAS); only guests use it.
    unsafe {
        asm!(
            "mrs {}, s3_4_c12_c1_1",
            "msr s3_4_c12_c1_1, xzr",
            out(reg) value,
            options(nomem, nostack, preserves_flags)
        )
    };
    value
}

/// Sets VDISR_EL2 (FEAT_RAS only) to a guest's DISR_EL1.
pub fn set_vdisr(value: u64) {
    // SAFETY: as in `take_vdisr`.
    unsafe {
        asm!("msr s3_4_c12_c1_1, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}

/// MDSCR_EL1 in the hardware.
pub fn write_mdscr(value: u64) {
    // SAFETY: MDSCR_EL1 enables debug events of lower ELs only (the kernel runs with PSTATE.D
    // set and never sets KDE for itself).
    unsafe { asm!("msr mdscr_el1, {}", "isb", in(reg) value, options(nostack, preserves_flags)) };
}

/// Disables every breakpoint and watchpoint at boot (their reset values are UNKNOWN).
pub fn clear_debug_registers(features: &super::cpu::Features) {
    let hardware = Hardware::new(features.dfr0, 0, 0);
    load_debug(&DebugState::RESET, &hardware);
}

/// HCR_EL2 for a guest (Arm ARM D24.2.48): RW (EL1 is AArch64), VM (stage 2), SWIO, PTW (a
/// stage-1 walk to device memory faults), FMO/IMO/AMO (physical interrupts and SErrors to EL2,
/// virtual ones to the guest), FB and BSU = inner shareable (broadcast TLB and barrier scope),
/// TWI/TWE (WFI and WFE trap, so an idle guest yields), TSC (SMC traps: PSCI through the VMM),
/// TSW (set/way cache maintenance traps: it cannot work under virtualization, Arm ARM D7.5.9),
/// TIDCP (implementation-defined registers trap), TID3 (feature ID register reads trap, so the
/// kernel hides what it does not switch: `capvisor_kernel::idregs`). Plus FWB
/// ([`super::el0::HCR_FWB`]) when the stage-2 descriptors use the FEAT_S2FWB encoding.
pub const HCR_GUEST: u64 = HCR_EL2::RW::EL1IsAarch64.value
    | HCR_EL2::TSW::SET.value
    | HCR_EL2::TID3::SET.value
    | HCR_EL2::TIDCP::SET.value
    | HCR_EL2::TSC::SET.value
    | HCR_EL2::TWE::SET.value
    | HCR_EL2::TWI::SET.value
    | HCR_EL2::BSU::InnerShareable.value
    | HCR_EL2::FB::SET.value
    | HCR_EL2::AMO::SET.value
    | HCR_EL2::IMO::SET.value
    | HCR_EL2::FMO::SET.value
    | HCR_EL2::PTW::SET.value
    | HCR_EL2::SWIO::SET.value
    | HCR_EL2::VM::SET.value;

/// HCR_EL2 for guests on this machine: [`HCR_GUEST`], the trap bits whose features exist
/// (`cpu::guest_hcr_extra`) and FWB when the stage-2 descriptors use its encoding; set
/// at boot.
static GUEST_HCR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(HCR_GUEST);

/// Sets the guests' HCR_EL2 for this machine (boot).
pub fn set_guest_hcr(features: &super::cpu::Features, fwb: bool) {
    GUEST_HCR.store(
        HCR_GUEST
            | super::cpu::guest_hcr_extra(features)
            | if fwb { super::el0::HCR_FWB } else { 0 },
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// HCR_EL2 for a guest.
#[must_use]
pub fn guest_hcr() -> u64 {
    GUEST_HCR.load(core::sync::atomic::Ordering::Relaxed)
}

/// HPFAR_EL2: the faulting IPA's page, for stage-2 faults (Arm ARM D24.2.57: FIPA holds
/// IPA[51:12] in bits [43:4] (with FEAT_LPA, [47:4] for 52 bits)).
pub fn hpfar() -> u64 {
    let value: u64;
    // SAFETY: reading a syndrome register has no side effects.
    unsafe { asm!("mrs {}, hpfar_el2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// The faulting IPA from HPFAR_EL2 and FAR_EL2's offset within the page.
pub fn fault_ipa(hpfar: u64, far: u64) -> u64 {
    (((hpfar >> 4) & ((1 << 44) - 1)) << 12) | (far & 0xfff)
}

/// `read_id_register(crm, op2)`: the hardware value of the feature ID register at op0 3, op1 0,
/// CRn 0, (CRm, op2) — one MRS encoding each (the generic `S3_0_C0_C<m>_<n>` names, which also
/// reach the reserved encodings of that space, RAZ).
macro_rules! id_register_reader {
    ($($crm:literal => [$($op2:literal),*]),* $(,)?) => {
        /// The hardware's ID register at (CRm, op2) of the feature ID space (CRm 1–7).
        pub fn read_id_register(crm: u8, op2: u8) -> u64 {
            let value: u64;
            match (crm, op2) {
                $($(
                    // SAFETY: reading an ID register at EL2 has no side effects.
                    ($crm, $op2) => unsafe {
                        asm!(concat!("mrs {}, S3_0_C0_C", stringify!($crm), "_", stringify!($op2)),
                             out(reg) value, options(nomem, nostack, preserves_flags))
                    },
                )*)*
                _ => value = 0,
            }
            value
        }
    };
}

id_register_reader!(
    1 => [0, 1, 2, 3, 4, 5, 6, 7],
    2 => [0, 1, 2, 3, 4, 5, 6, 7],
    3 => [0, 1, 2, 3, 4, 5, 6, 7],
    4 => [0, 1, 2, 3, 4, 5, 6, 7],
    5 => [0, 1, 2, 3, 4, 5, 6, 7],
    6 => [0, 1, 2, 3, 4, 5, 6, 7],
    7 => [0, 1, 2, 3, 4, 5, 6, 7],
);
