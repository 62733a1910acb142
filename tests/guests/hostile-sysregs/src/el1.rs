//! Item B, registers: the registers of hidden features must be UNDEFINED at EL1 (each is
//! "present only when FEAT_x is implemented. Otherwise, direct accesses are UNDEFINED", Arm ARM
//! DDI 0487 D24 register descriptions), ACTLR_EL1 reads as zero and ignores writes, MIDR_EL1 is
//! the CPU's, and the EL1 physical timer's registers work.

use crate::show::Taken;
use capvisor_guest_rt::probe::Trap;
use capvisor_guest_rt::{println, probe};
use hostile_guest_common::{read_sysreg, timer};

/// The line for a probed access: what the exception showed, or what the access did.
pub fn report(name: &str, access: &str, trap: Option<Trap>, value: Option<u64>) {
    match (trap, value) {
        (Some(t), _) => {
            let taken = Taken {
                vector: t.vector,
                esr: t.esr,
                elr: t.elr,
                pc: t.pc,
            };
            println!("{name} {access}: {taken}");
        }
        (None, Some(value)) => println!("{name} {access}: completed, {value:#x}"),
        (None, None) => println!("{name} {access}: completed"),
    }
}

/// Reads and writes (zero) a register that must be UNDEFINED, printing a line for each.
macro_rules! undefined {
    ($name:literal, $encoding:literal) => {{
        let mut value = 0u64;
        let trap = probe!(concat!("mrs {v}, ", $encoding), v = inout(reg) value);
        report($name, "read", trap, Some(value));
        let trap = probe!(concat!("msr ", $encoding, ", xzr"));
        report($name, "write", trap, None);
    }};
}

pub fn run() {
    // FEAT_LOR (hidden: ID_AA64MMFR1_EL1.LO = 0).
    undefined!("LORSA_EL1", "S3_0_C10_C4_0");
    undefined!("LOREA_EL1", "S3_0_C10_C4_1");
    undefined!("LORN_EL1", "S3_0_C10_C4_2");
    undefined!("LORC_EL1", "S3_0_C10_C4_3");
    undefined!("LORID_EL1", "S3_0_C10_C4_7");
    // FEAT_RAS error records (hidden: ID_AA64PFR0_EL1.RAS = 0).
    undefined!("ERRIDR_EL1", "S3_0_C5_C3_0");
    undefined!("ERRSELR_EL1", "S3_0_C5_C3_1");
    undefined!("ERXFR_EL1", "S3_0_C5_C4_0");
    undefined!("ERXCTLR_EL1", "S3_0_C5_C4_1");
    undefined!("ERXSTATUS_EL1", "S3_0_C5_C4_2");
    undefined!("ERXADDR_EL1", "S3_0_C5_C4_3");
    undefined!("ERXMISC0_EL1", "S3_0_C5_C5_0");
    undefined!("ERXMISC1_EL1", "S3_0_C5_C5_1");
    // FEAT_PMUv3 (hidden: ID_AA64DFR0_EL1.PMUVer = 0).
    undefined!("PMCR_EL0", "S3_3_C9_C12_0");
    undefined!("PMCNTENSET_EL0", "S3_3_C9_C12_1");
    undefined!("PMOVSCLR_EL0", "S3_3_C9_C12_3");
    undefined!("PMSELR_EL0", "S3_3_C9_C12_5");
    undefined!("PMCEID0_EL0", "S3_3_C9_C12_6");
    undefined!("PMCCNTR_EL0", "S3_3_C9_C13_0");
    undefined!("PMXEVTYPER_EL0", "S3_3_C9_C13_1");
    undefined!("PMUSERENR_EL0", "S3_3_C9_C14_0");
    undefined!("PMINTENSET_EL1", "S3_0_C9_C14_1");
    // FEAT_AMUv1 (ID_AA64PFR0_EL1.AMU = 0).
    undefined!("AMCR_EL0", "S3_3_C13_C2_0");
    // FEAT_SPE (ID_AA64DFR0_EL1.PMSVer = 0).
    undefined!("PMSCR_EL1", "S3_0_C9_C9_0");
    undefined!("PMBLIMITR_EL1", "S3_0_C9_C10_0");
    // FEAT_TRF (ID_AA64DFR0_EL1.TraceFilt = 0).
    undefined!("TRFCR_EL1", "S3_0_C1_C2_1");
    // FEAT_PAuth (ID_AA64ISAR1_EL1.APA/API/GPA/GPI = 0).
    undefined!("APIAKeyLo_EL1", "S3_0_C2_C1_0");
    // FEAT_CSV2_2 / FEAT_CSV2_1p2 (ID_AA64PFR0_EL1.CSV2 < 2, ID_AA64PFR1_EL1.CSV2_frac < 2).
    undefined!("SCXTNUM_EL1", "S3_0_C13_C0_7");
    auxiliary_control();
    let midr = read_sysreg!("midr_el1");
    println!("MIDR_EL1 {midr:#x}");
    physical_timer();
}

/// ACTLR_EL1: IMPLEMENTATION DEFINED, and not switched between guests: reads as zero, writes
/// ignored.
fn auxiliary_control() {
    let mut before = 0u64;
    let read = probe!("mrs {v}, S3_0_C1_C0_1", v = inout(reg) before);
    let write = probe!("msr S3_0_C1_C0_1, {v}", v = in(reg) 0x5au64);
    let mut after = 0u64;
    let again = probe!("mrs {v}, S3_0_C1_C0_1", v = inout(reg) after);
    if read.is_some() || write.is_some() || again.is_some() {
        report("ACTLR_EL1", "read", read, Some(before));
        report("ACTLR_EL1", "write", write, None);
        return;
    }
    println!("ACTLR_EL1: read {before:#x}; wrote 0x5a; read {after:#x}");
}

/// The EL1 physical timer's registers at EL1: CVAL reads back, ISTATUS follows it, TVAL counts
/// down to it (Arm ARM D12.8.1 "Operation of the TimerValue and CompareValue views").
fn physical_timer() {
    let mut ctl = 0u64;
    let trap = probe!("mrs {v}, cntp_ctl_el0", v = inout(reg) ctl);
    if trap.is_some() {
        report("CNTP_CTL_EL0", "read", trap, None);
        return;
    }
    // Masked, so that no interrupt comes of it.
    timer::set_physical_ctl(timer::ENABLE | timer::IMASK);
    let now = timer::physical_count();
    let far = now + 0x1000_0000;
    timer::set_physical_cval(far);
    let back = timer::physical_cval();
    let pending_far = timer::physical_ctl() & timer::ISTATUS != 0;
    let tval = timer::physical_tval() as u32;
    timer::set_physical_cval(now);
    let pending_past = timer::physical_ctl() & timer::ISTATUS != 0;
    timer::set_physical_tval(0x7fff_ffff);
    let ahead = timer::physical_cval().wrapping_sub(timer::physical_count());
    timer::set_physical_ctl(0);
    println!(
        "CNTP_CVAL_EL0 reads back: {}; ISTATUS before CVAL: {}, after: {}; TVAL counts down: {}; \
         TVAL write sets CVAL ahead: {}",
        back == far,
        u8::from(pending_far),
        u8::from(pending_past),
        tval > 0x0800_0000 && tval <= 0x1000_0000,
        ahead > 0 && ahead <= 0x7fff_ffff,
    );
}
