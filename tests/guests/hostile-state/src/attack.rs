//! The attacker: every EL1 control and secret it can write, then an exit that leaves them in the
//! CPU if the hypervisor lets it.

use crate::secrets;
use capvisor_guest_rt::contract::psci;
use capvisor_guest_rt::{Outcome, counter, println, probe, psci_call, system_off};
use core::arch::asm;
use hostile_guest_common::{frequency, read_sysreg, timer, wfi, write_sysreg};

/// How the attacker leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// WFI forever, with the virtual timer armed for centuries ahead; FP/SIMD disabled.
    Wfi,
    /// PSCI CPU_OFF, the virtual timer firing 1 ms later; FP/SIMD left enabled.
    CpuOff,
    /// PSCI SYSTEM_OFF, the virtual timer firing 1 ms later; FP/SIMD disabled.
    SystemOff,
}

impl Exit {
    const fn name(self) -> &'static str {
        match self {
            Self::Wfi => "attack-wfi",
            Self::CpuOff => "attack-cpu-off",
            Self::SystemOff => "attack-system-off",
        }
    }
}

/// PSCI CPU_OFF (DEN0022, 5.1).
const CPU_OFF: u32 = 0x8400_0002;
/// SCTLR_EL1 bits (Arm ARM D24.2.161): A (1), nTWI (16), nTWE (18), E0E (24), UCT (15), DZE
/// (14), UCI (26).
const SCTLR_A: u64 = 1 << 1;
const SCTLR_E0E: u64 = 1 << 24;
const SCTLR_CLEARED: u64 = (1 << 14) | (1 << 15) | (1 << 16) | (1 << 18) | (1 << 26);
/// WFIs returned before the attacker concludes it is spinning and powers off.
const SPIN_LIMIT: u64 = 100_000;

pub fn run(exit: Exit) -> Outcome {
    let name = exit.name();
    write_fp();
    write_thread_registers();
    let par = leave_translation();
    let (lor, disr) = write_optional();
    let cntvoff = probe!("msr cntvoff_el2, {v}", v = in(reg) 0x5ec2u64);
    match cntvoff {
        Some(trap) if trap.is_el1_undef() => println!("{name}: CNTVOFF_EL2 write: UNDEF"),
        Some(trap) => println!("{name}: CNTVOFF_EL2 write: ESR {:#x}", trap.esr),
        None => println!("{name}: CNTVOFF_EL2 write: completed"),
    }
    let cntkctl = if exit == Exit::CpuOff {
        0
    } else {
        secrets::CNTKCTL_OPEN
    };
    write_sysreg!("cntkctl_el1", cntkctl);
    let sctlr = (read_sysreg!("sctlr_el1") | SCTLR_E0E | SCTLR_A) & !SCTLR_CLEARED;
    write_sysreg!("sctlr_el1", sctlr);
    let deadline = match exit {
        Exit::Wfi => secrets::CNTV_CVAL,
        Exit::CpuOff | Exit::SystemOff => counter() + frequency() / 1000,
    };
    timer::arm_virtual(deadline);
    println!(
        "{name}: wrote SCTLR_EL1 {sctlr:#x} (E0E=1 A=1 UCI=UCT=DZE=nTWI=nTWE=0), CNTKCTL_EL1 {cntkctl:#x}"
    );
    println!(
        "{name}: wrote TPIDR_EL0, TPIDRRO_EL0, TPIDR_EL1, Q0-Q31, FPCR, FPSR; PAR_EL1 {par:#x}"
    );
    println!("{name}: wrote LORSA_EL1 {lor}, DISR_EL1 {disr}; CNTV_CVAL_EL0 {deadline:#x} enabled");
    if exit != Exit::CpuOff {
        // CPACR_EL1.FPEN = 0 (bits 21:20): FP/SIMD disabled at EL1 and EL0.
        write_sysreg!("cpacr_el1", 0);
    }
    match exit {
        Exit::Wfi => {
            println!("{name}: waiting in WFI forever");
            for _ in 0..SPIN_LIMIT {
                wfi();
            }
            println!("{name}: WFI returned {SPIN_LIMIT} times with nothing to wake it");
            system_off()
        }
        Exit::CpuOff => {
            println!("{name}: calling CPU_OFF");
            psci_call(CPU_OFF, 0, 0, 0);
            Outcome::Fail("CPU_OFF returned")
        }
        Exit::SystemOff => {
            println!("{name}: calling SYSTEM_OFF");
            psci_call(psci::SYSTEM_OFF, 0, 0, 0);
            Outcome::Fail("SYSTEM_OFF returned")
        }
    }
}

/// Q0–Q31, FPCR and FPSR hold secrets (CPACR_EL1.FPEN is 0b11 from the runtime's entry).
fn write_fp() {
    let mut values = [[0u64; 2]; 32];
    for (n, slot) in values.iter_mut().enumerate() {
        *slot = secrets::q(n as u32);
    }
    // SAFETY: loads the FP/SIMD registers from `values` and writes FPCR/FPSR; the guest's Rust
    // code is soft-float and keeps nothing in them.
    unsafe {
        asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "ldp q0, q1, [{p}, #0]",
            "ldp q2, q3, [{p}, #32]",
            "ldp q4, q5, [{p}, #64]",
            "ldp q6, q7, [{p}, #96]",
            "ldp q8, q9, [{p}, #128]",
            "ldp q10, q11, [{p}, #160]",
            "ldp q12, q13, [{p}, #192]",
            "ldp q14, q15, [{p}, #224]",
            "ldp q16, q17, [{p}, #256]",
            "ldp q18, q19, [{p}, #288]",
            "ldp q20, q21, [{p}, #320]",
            "ldp q22, q23, [{p}, #352]",
            "ldp q24, q25, [{p}, #384]",
            "ldp q26, q27, [{p}, #416]",
            "ldp q28, q29, [{p}, #448]",
            "ldp q30, q31, [{p}, #480]",
            "msr fpcr, {fpcr}",
            "msr fpsr, {fpsr}",
            "isb",
            p = in(reg) values.as_ptr(),
            fpcr = in(reg) secrets::FPCR,
            fpsr = in(reg) secrets::FPSR,
            options(nostack, readonly)
        );
    }
}

fn write_thread_registers() {
    write_sysreg!("tpidr_el0", secrets::TPIDR_EL0);
    write_sysreg!("tpidrro_el0", secrets::TPIDRRO_EL0);
    write_sysreg!("tpidr_el1", secrets::TPIDR_EL1);
}

/// PAR_EL1 from an AT S1E1R of the secret address (MMU off: PA = VA).
fn leave_translation() -> u64 {
    // SAFETY: an address translation instruction only writes PAR_EL1.
    unsafe {
        asm!("at s1e1r, {a}", "isb", a = in(reg) secrets::PAR_ADDRESS, options(nomem, nostack));
    }
    read_sysreg!("par_el1")
}

/// LORSA_EL1 (FEAT_LOR) and DISR_EL1 (FEAT_RAS), each "UNDEF" where the CPU or the hypervisor
/// has not got it, else what reads back.
fn write_optional() -> (Written, Written) {
    let lor = probe!("msr S3_0_C10_C4_0, {v}", v = in(reg) secrets::LORSA);
    let lor = match lor {
        Some(_) => Written::Undef,
        None => Written::Value(read_or_undef_lorsa()),
    };
    let disr = probe!("msr S3_0_C12_C1_1, {v}", v = in(reg) secrets::DISR);
    let disr = match disr {
        Some(_) => Written::Undef,
        None => Written::Value(read_or_undef_disr()),
    };
    (lor, disr)
}

fn read_or_undef_lorsa() -> u64 {
    let mut value = 0;
    let _ = probe!("mrs {v}, S3_0_C10_C4_0", v = inout(reg) value);
    value
}

fn read_or_undef_disr() -> u64 {
    let mut value = 0;
    let _ = probe!("mrs {v}, S3_0_C12_C1_1", v = inout(reg) value);
    value
}

/// What a write left.
#[derive(Clone, Copy, Debug)]
enum Written {
    Undef,
    Value(u64),
}

impl core::fmt::Display for Written {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Undef => f.write_str("UNDEF"),
            Self::Value(value) => write!(f, "{value:#x}"),
        }
    }
}
