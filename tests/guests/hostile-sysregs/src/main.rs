//! Test guest `sysregs` (`docs/hostile-guests.md`, items B and C): what a guest gets for the
//! system registers and exception classes it can reach. Two roles (the manifest's `cmdline`):
//! - `el1` (item B): from EL1, every register of a hidden feature (LOR, RAS error records, PMU,
//!   AMU, SPE, trace filter, pointer-authentication keys, SCXTNUM) read and written — each must
//!   be an Undefined Instruction exception at EL1; ACTLR_EL1 RAZ/WI; MIDR_EL1; the feature ID
//!   fields and the reserved ID encodings; the EL1 physical timer's registers; an HVC and SMC
//!   fuzz with random function IDs; BRK, SVC, WFE, cache maintenance by VA and TLBI at EL1;
//! - `el0` (item C): from AArch64 EL0 the counter and physical timer under the guest's own
//!   CNTKCTL_EL1, and registers EL0 may not use; from AArch32 EL0 (where ID_AA64PFR0_EL1.EL0
//!   says it exists) a 16-bit T32 WFI, a CP15 PMU access and a CP14 debug access.
//!
//! Each check prints one line, `<what>: <what happened>`; the QEMU test compares the lines
//! with what the Arm ARM and the guest contract say. The guest itself passes when it got to
//! its end (a trap that stops it shows as a missing PASS).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("sysregs", run);

mod show;

#[cfg(target_os = "none")]
mod calls;
#[cfg(target_os = "none")]
mod el0;
#[cfg(target_os = "none")]
mod el1;
#[cfg(target_os = "none")]
mod idregs;

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::Outcome;
    let mut buffer = [0u8; 64];
    match hostile_guest_common::role(&mut buffer) {
        "el1" => {
            el1::run();
            idregs::run();
            calls::run();
            Outcome::Pass
        }
        "el0" => el0::run(),
        _ => Outcome::Skip("no role: run me with cmdline el1 or el0"),
    }
}
