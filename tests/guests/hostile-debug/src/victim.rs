//! The victim: a fresh vCPU of the debugger's image, started while the debugger's breakpoints
//! and watchpoints are armed on the very addresses it uses.

use crate::regs::{MDSCR_KDE, MDSCR_MDE, MDSCR_SS};
use crate::shared::{self, EL0_WORD};
use capvisor_guest_rt::{Outcome, println};
use core::sync::atomic::Ordering;
use hostile_guest_common::read_sysreg;

/// ESR_EL1.EC of an SVC from AArch64.
const EC_SVC64: u64 = 0x15;

pub fn run() -> Outcome {
    let bcr = [
        read_sysreg!("dbgbcr0_el1"),
        read_sysreg!("dbgbcr1_el1"),
        read_sysreg!("dbgbcr2_el1"),
        read_sysreg!("dbgbcr3_el1"),
    ];
    let wcr = [read_sysreg!("dbgwcr0_el1"), read_sysreg!("dbgwcr1_el1")];
    let bvr0 = read_sysreg!("dbgbvr0_el1");
    let mdscr = read_sysreg!("mdscr_el1");
    let enabled = bcr
        .iter()
        .chain(wcr.iter())
        .filter(|&&c| c & 1 != 0)
        .count();
    let mdscr_debug = mdscr & (MDSCR_SS | MDSCR_KDE | MDSCR_MDE);
    let theirs = bvr0 == shared::SERVICE_ENTRY;
    println!(
        "victim: {enabled} of its breakpoints 0-3 and watchpoints 0-1 enabled; DBGBVR0_EL1 \
         {bvr0:#x} (the debugger's: {theirs}); MDSCR_EL1.SS/KDE/MDE {mdscr_debug:#x}"
    );
    let before = EL0_WORD.0.load(Ordering::Relaxed);
    let exit = shared::run_el0_code(0);
    let after = EL0_WORD.0.load(Ordering::Relaxed);
    let code = shared::el0_code();
    let clean = exit.class() == EC_SVC64 && exit.elr == code + 20 && after == before + 1;
    println!(
        "victim: EL0 code on the debugger's addresses ran to its SVC: {clean} (ESR_EL1 {:#x}, ELR \
         code+{})",
        exit.esr,
        exit.elr.wrapping_sub(code)
    );
    if enabled == 0 && !theirs && mdscr_debug == 0 && clean {
        Outcome::Pass
    } else {
        Outcome::Fail("the debugger's debug state reached another guest")
    }
}
