//! The victim: a fresh vCPU, started after the attackers left their state, reads its own
//! registers before it does anything else and must see its reset values, never a secret.

use crate::secrets;
use capvisor_guest_rt::{Outcome, println, probe};
use core::arch::asm;
use hostile_guest_common::encode::SECRET_TAG;
use hostile_guest_common::{read_sysreg, timer};

/// What the victim read, before anything else ran.
struct Seen {
    q: [[u64; 2]; 32],
    fpcr: u64,
    fpsr: u64,
    tpidr_el0: u64,
    tpidrro_el0: u64,
    tpidr_el1: u64,
    par: u64,
    sctlr: u64,
    cntkctl: u64,
    cntv_ctl: u64,
    cntv_cval: u64,
}

fn read_fp(q: &mut [[u64; 2]; 32]) -> (u64, u64) {
    let (fpcr, fpsr): (u64, u64);
    // SAFETY: stores the FP/SIMD registers into `q` and reads FPCR/FPSR (CPACR_EL1.FPEN is 0b11
    // from the runtime's entry; nothing has used them since the vCPU was reset).
    unsafe {
        asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "stp q0, q1, [{p}, #0]",
            "stp q2, q3, [{p}, #32]",
            "stp q4, q5, [{p}, #64]",
            "stp q6, q7, [{p}, #96]",
            "stp q8, q9, [{p}, #128]",
            "stp q10, q11, [{p}, #160]",
            "stp q12, q13, [{p}, #192]",
            "stp q14, q15, [{p}, #224]",
            "stp q16, q17, [{p}, #256]",
            "stp q18, q19, [{p}, #288]",
            "stp q20, q21, [{p}, #320]",
            "stp q22, q23, [{p}, #352]",
            "stp q24, q25, [{p}, #384]",
            "stp q26, q27, [{p}, #416]",
            "stp q28, q29, [{p}, #448]",
            "stp q30, q31, [{p}, #480]",
            "mrs {fpcr}, fpcr",
            "mrs {fpsr}, fpsr",
            p = in(reg) q.as_mut_ptr(),
            fpcr = out(reg) fpcr,
            fpsr = out(reg) fpsr,
            options(nostack)
        );
    }
    (fpcr, fpsr)
}

fn read_all() -> Seen {
    let mut q = [[0u64; 2]; 32];
    let (fpcr, fpsr) = read_fp(&mut q);
    Seen {
        q,
        fpcr,
        fpsr,
        tpidr_el0: read_sysreg!("tpidr_el0"),
        tpidrro_el0: read_sysreg!("tpidrro_el0"),
        tpidr_el1: read_sysreg!("tpidr_el1"),
        par: read_sysreg!("par_el1"),
        sctlr: read_sysreg!("sctlr_el1"),
        cntkctl: read_sysreg!("cntkctl_el1"),
        cntv_ctl: timer::virtual_ctl(),
        cntv_cval: read_sysreg!("cntv_cval_el0"),
    }
}

/// A register read by a probe: `None` if it is UNDEF.
fn optional(read: Option<capvisor_guest_rt::probe::Trap>, value: u64) -> Option<u64> {
    match read {
        Some(_) => None,
        None => Some(value),
    }
}

pub fn run() -> Outcome {
    let seen = read_all();
    let mut misses = 0u32;
    let mut check = |ok: bool, what: core::fmt::Arguments<'_>| {
        let verdict = if ok { "ok" } else { "WRONG" };
        println!("victim: {what}: {verdict}");
        misses += u32::from(!ok);
    };
    let zero = seen.q.iter().all(|q| *q == [0, 0]);
    let secret_q = seen
        .q
        .iter()
        .enumerate()
        .filter(|(n, q)| **q == secrets::q(*n as u32));
    check(
        zero,
        format_args!(
            "Q0-Q31 all zero after vCPU reset (Q0 {:#x}:{:#x}, {} hold the attackers' secrets)",
            seen.q[0][1],
            seen.q[0][0],
            secret_q.count()
        ),
    );
    check(
        seen.fpcr != secrets::FPCR && seen.fpsr != secrets::FPSR,
        format_args!(
            "FPCR {:#x} FPSR {:#x}, not the attackers'",
            seen.fpcr, seen.fpsr
        ),
    );
    check(
        seen.tpidr_el0 == 0 && seen.tpidrro_el0 == 0 && seen.tpidr_el1 == 0,
        format_args!(
            "TPIDR_EL0 {:#x} TPIDRRO_EL0 {:#x} TPIDR_EL1 {:#x}, zero after vCPU reset",
            seen.tpidr_el0, seen.tpidrro_el0, seen.tpidr_el1
        ),
    );
    check(
        secrets::par_address(seen.par) != secrets::PAR_ADDRESS || seen.par & 1 != 0,
        format_args!("PAR_EL1 {:#x}, not the attackers' translation", seen.par),
    );
    check(
        seen.sctlr & ((1 << 24) | (1 << 1)) == 0,
        format_args!("SCTLR_EL1 {:#x}: E0E=0 A=0", seen.sctlr),
    );
    check(
        seen.cntkctl != secrets::CNTKCTL_OPEN,
        format_args!("CNTKCTL_EL1 {:#x}, not the attackers' 0x303", seen.cntkctl),
    );
    check(
        seen.cntv_ctl & timer::ENABLE == 0 && seen.cntv_cval != secrets::CNTV_CVAL,
        format_args!(
            "CNTV_CTL_EL0 {:#x} CNTV_CVAL_EL0 {:#x}: timer off, not the attackers'",
            seen.cntv_ctl, seen.cntv_cval
        ),
    );
    let mut lorsa = 0;
    let lorsa = optional(
        probe!("mrs {v}, S3_0_C10_C4_0", v = inout(reg) lorsa),
        lorsa,
    );
    let mut disr = 0;
    let disr = optional(probe!("mrs {v}, S3_0_C12_C1_1", v = inout(reg) disr), disr);
    check(
        lorsa.is_none_or(|v| v != secrets::LORSA),
        format_args!("LORSA_EL1 {}: UNDEF or not the attackers'", Shown(lorsa)),
    );
    check(
        disr.is_none_or(|v| v == 0),
        format_args!("DISR_EL1 {}: UNDEF or zero after vCPU reset", Shown(disr)),
    );
    let tagged = [
        seen.tpidr_el0,
        seen.tpidrro_el0,
        seen.tpidr_el1,
        seen.cntv_cval,
    ]
    .iter()
    .chain(seen.q.iter().flatten())
    .filter(|&&v| v >> 32 == SECRET_TAG)
    .count();
    check(
        tagged == 0,
        format_args!("{tagged} register(s) hold a secret"),
    );
    if misses == 0 {
        Outcome::Pass
    } else {
        Outcome::Fail("a fresh vCPU sees another guest's EL1 state")
    }
}

/// A probed value, or UNDEF.
struct Shown(Option<u64>);

impl core::fmt::Display for Shown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value:#x}"),
            None => f.write_str("UNDEF"),
        }
    }
}
