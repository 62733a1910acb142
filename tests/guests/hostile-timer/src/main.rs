//! Test guest `timer` (`docs/hostile-guests.md`, item E): the EL1 physical timer works inside a
//! guest and is the guest's own (Arm ARM DDI 0487, D12.8 "The timers": a timer's condition is
//! met when the count reaches CVAL; CNTP_CTL_EL0.ISTATUS shows it, IMASK masks the interrupt;
//! the non-secure EL1 physical timer's interrupt is PPI 30 on QEMU `virt`). Two roles (the
//! manifest's `cmdline`), run at once:
//! - `first`: sets CVAL 300 ms ahead and sleeps 200 ms — the second guest boots and runs all of
//!   its checks meanwhile — then finds its CVAL unchanged and no interrupt yet, and takes its
//!   own at 300 ms; its own interrupt (CNTP_TVAL_EL0 = 1 ms, ENABLE) arrives as INTID 30 with
//!   ISTATUS set and not before CVAL; IMASK stops it though ISTATUS reads 1; and the virtual
//!   timer, INTID 27;
//! - `second`: its own interrupt at 2 ms, then a CVAL 5 ms ahead that must read back and fire at
//!   its own time, while the first guest's timer is armed too.
//!
//! Every wait is a WFI with IRQs unmasked and the virtual timer armed as a watchdog, so a timer
//! that never fires shows as its line, not as a hang.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("timer", run);

#[cfg(target_os = "none")]
mod checks;

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::Outcome;
    let mut buffer = [0u8; 64];
    match hostile_guest_common::role(&mut buffer) {
        "first" => checks::run(checks::Role::First),
        "second" => checks::run(checks::Role::Second),
        _ => Outcome::Skip("no role: run me with cmdline first or second"),
    }
}
