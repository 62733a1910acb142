//! The debugger: the OS lock, a breakpoint, a watchpoint and a single step inside the guest,
//! then everything armed on addresses others use, and WFI forever.

use crate::regs::{
    AT_EL0, AT_EL1, AT_EL1_EL0, ESR_BREAKPOINT_EL1, ESR_STEP_FROM_EL0, ESR_WATCHPOINT_STORE_EL1,
    MDSCR_KDE, MDSCR_MDE, MDSCR_SS, bcr, oslsr, wcr,
};
use crate::shared::{self, EL0_WORD, SERVICE_ENTRY};
use capvisor_guest_rt::contract::LOAD_ADDRESS;
use capvisor_guest_rt::el0::SPSR_SS;
use capvisor_guest_rt::{Outcome, println, set_vector_hook, system_off};
use core::arch::asm;
use hostile_guest_common::{read_sysreg, wfi, write_sysreg};

/// WFIs returned before the debugger concludes it is spinning and powers off.
const SPIN_LIMIT: u64 = 100_000;

/// Unmasks debug exceptions at EL1 (PSTATE.D = 0).
fn unmask_debug() {
    // SAFETY: only this vCPU's debug mask; the hook handles what is taken.
    unsafe { asm!("msr daifclr, #8", "isb", options(nomem, nostack)) };
}

/// Masks debug exceptions at EL1 again.
fn mask_debug() {
    // SAFETY: as above.
    unsafe { asm!("msr daifset, #8", "isb", options(nomem, nostack)) };
}

/// How a debug exception showed: `ESR_EL1 … at +0x200, ELR <where>, FAR <where>` or `not taken`;
/// whether it is the expected one, at VBAR_EL1 + 0x200.
fn describe(what: &str, expected: u64, expected_elr: u64, expected_far: Option<u64>) -> bool {
    match shared::taken() {
        None => {
            println!("{what}: not taken");
            false
        }
        Some((vector, esr, elr, far)) => {
            let ok = esr == expected
                && vector == 4
                && elr == expected_elr
                && expected_far.is_none_or(|address| address == far);
            let elr = if elr == expected_elr {
                "at the instruction"
            } else {
                "elsewhere"
            };
            let far = match expected_far {
                Some(address) if address == far => ", FAR the watched word",
                Some(_) => ", FAR elsewhere",
                None => "",
            };
            println!(
                "{what}: ESR_EL1 {esr:#x} at +{:#x}, ELR {elr}{far}",
                vector * 0x80
            );
            ok
        }
    }
}

fn os_lock() -> bool {
    let initial = read_sysreg!("oslsr_el1");
    write_sysreg!("oslar_el1", 1);
    let locked = read_sysreg!("oslsr_el1");
    write_sysreg!("oslar_el1", 0);
    let unlocked = read_sysreg!("oslsr_el1");
    println!("OSLSR_EL1 at reset {initial:#x}");
    println!("OSLAR_EL1 1: OSLSR_EL1 {locked:#x}; OSLAR_EL1 0: OSLSR_EL1 {unlocked:#x}");
    (locked, unlocked) == (oslsr(true), oslsr(false))
}

fn breakpoint() -> bool {
    let target = shared::el1_target();
    write_sysreg!("dbgbvr0_el1", target);
    write_sysreg!("dbgbcr0_el1", bcr(AT_EL1));
    let mdscr = read_sysreg!("mdscr_el1");
    write_sysreg!("mdscr_el1", mdscr | MDSCR_KDE | MDSCR_MDE);
    let back = (read_sysreg!("dbgbvr0_el1"), read_sysreg!("dbgbcr0_el1"));
    println!(
        "DBGBVR0_EL1, DBGBCR0_EL1 read back as written: {}",
        back == (target, bcr(AT_EL1))
    );
    unmask_debug();
    shared::call_el1_target();
    mask_debug();
    describe(
        "breakpoint on an EL1 function",
        ESR_BREAKPOINT_EL1,
        target,
        None,
    )
}

fn watchpoint() -> bool {
    let word = core::ptr::from_ref(&EL0_WORD) as u64;
    write_sysreg!("dbgwvr0_el1", word);
    write_sysreg!("dbgwcr0_el1", wcr(AT_EL1_EL0, 0xff, 0));
    let store: u64;
    unmask_debug();
    // SAFETY: a store to the watched word, a static of this guest; `store` is its address.
    unsafe {
        asm!("adr {pc}, 1f", "1: str {v}, [{a}]", pc = out(reg) store, v = in(reg) 0x5a_u64,
            a = in(reg) word, options(nostack));
    }
    mask_debug();
    describe(
        "watchpoint on a stored word at EL1",
        ESR_WATCHPOINT_STORE_EL1,
        store,
        Some(word),
    )
}

fn single_step() -> bool {
    let mdscr = read_sysreg!("mdscr_el1");
    write_sysreg!("mdscr_el1", mdscr | MDSCR_SS);
    let exit = shared::run_el0_code(SPSR_SS);
    write_sysreg!("mdscr_el1", mdscr & !MDSCR_SS);
    let after = exit.elr.wrapping_sub(shared::el0_code());
    println!(
        "single step of EL0 code: ESR_EL1 {:#x} at +{:#x}, ELR code+{after}",
        exit.esr,
        exit.vector * 0x80
    );
    exit.esr == ESR_STEP_FROM_EL0 && exit.vector == 8 && after == 4
}

/// Breakpoints and watchpoints on what others run and touch, every enable set.
fn arm_everything() {
    let word = core::ptr::from_ref(&EL0_WORD) as u64;
    write_sysreg!("dbgbvr0_el1", SERVICE_ENTRY);
    write_sysreg!("dbgbcr0_el1", bcr(AT_EL0));
    write_sysreg!("dbgbvr1_el1", LOAD_ADDRESS);
    write_sysreg!("dbgbcr1_el1", bcr(AT_EL1_EL0));
    write_sysreg!("dbgbvr2_el1", LOAD_ADDRESS + 0x40);
    write_sysreg!("dbgbcr2_el1", bcr(AT_EL1_EL0));
    write_sysreg!("dbgbvr3_el1", shared::el0_code());
    write_sysreg!("dbgbcr3_el1", bcr(AT_EL0));
    // Every load and store at EL0 below 2 GiB (MASK = 31): all of the services' code and data.
    write_sysreg!("dbgwvr0_el1", 0);
    write_sysreg!("dbgwcr0_el1", wcr(AT_EL0, 0xff, 31));
    write_sysreg!("dbgwvr1_el1", word);
    write_sysreg!("dbgwcr1_el1", wcr(AT_EL1_EL0, 0xff, 0));
    let mdscr = read_sysreg!("mdscr_el1");
    write_sysreg!("mdscr_el1", mdscr | MDSCR_KDE | MDSCR_MDE | MDSCR_SS);
    println!(
        "armed: breakpoints {SERVICE_ENTRY:#x} (EL0), {LOAD_ADDRESS:#x} and +0x40, {:#x} (EL0); \
         watchpoints [0, 2 GiB) (EL0), {word:#x}; MDSCR_EL1 {:#x}",
        shared::el0_code(),
        read_sysreg!("mdscr_el1")
    );
}

pub fn run() -> Outcome {
    set_vector_hook(Some(shared::hook));
    let mut ok = os_lock();
    ok &= breakpoint();
    ok &= watchpoint();
    ok &= single_step();
    println!("OS lock, breakpoint, watchpoint and step as the Arm ARM describes: {ok}");
    arm_everything();
    println!("waiting in WFI forever");
    for _ in 0..SPIN_LIMIT {
        wfi();
    }
    println!("WFI returned {SPIN_LIMIT} times with nothing to wake it");
    system_off()
}
