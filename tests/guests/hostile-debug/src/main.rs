//! Test guest `debug` (`docs/hostile-guests.md`, item D): self-hosted debug inside a guest, and
//! its state confined to it. Two roles (the manifest's `cmdline`):
//! - `debugger`: the OS lock (OSLAR_EL1 locks and unlocks, OSLSR_EL1 reads back); a hardware
//!   breakpoint on an EL1 function (EC 0x31 at VBAR_EL1 + 0x200); a watchpoint on a word it
//!   stores to (EC 0x35); a single step of EL0 code (EC 0x32 at VBAR_EL1 + 0x400, after one
//!   instruction). Then it arms breakpoints and watchpoints on addresses other guests and the
//!   services use — the services' entry 0x200000 and all their data below 2 GiB at EL0, the test
//!   guests' entry 0x40200000, the victim's EL0 code and data — with MDSCR_EL1.{MDE, KDE, SS}
//!   set, and waits in WFI forever;
//! - `victim`: a fresh vCPU of the same image (the same addresses) reads its debug registers
//!   (none of the debugger's values) and runs its EL0 code, which must take no debug exception.
//!
//! The bystander service runs last, through the armed addresses.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("debug", run);

mod regs;

#[cfg(target_os = "none")]
mod debugger;
#[cfg(target_os = "none")]
mod shared;
#[cfg(target_os = "none")]
mod victim;

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::Outcome;
    let mut buffer = [0u8; 64];
    match hostile_guest_common::role(&mut buffer) {
        "debugger" => debugger::run(),
        "victim" => victim::run(),
        _ => Outcome::Skip("no role: run me with cmdline debugger or victim"),
    }
}
