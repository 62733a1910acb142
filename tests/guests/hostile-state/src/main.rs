//! Test guest `state` (`docs/hostile-guests.md`, item A): EL1 state does not reach services or
//! other guests. One crate, four roles (the manifest's `cmdline`):
//! - `attack-wfi`, `attack-cpu-off`, `attack-system-off`: write every EL1 control and secret it
//!   can — SCTLR_EL1 with E0E = 1, A = 1 and UCI = UCT = DZE = nTWI = nTWE = 0, CNTKCTL_EL1
//!   (0x303 or 0), TPIDR_EL0/TPIDRRO_EL0/TPIDR_EL1, Q0–Q31, FPCR, FPSR, PAR_EL1 (by an AT
//!   instruction), the LOR and RAS registers where they exist, the virtual timer armed — try
//!   CNTVOFF_EL2 (UNDEF at EL1), leave CPACR_EL1.FPEN = 0 (or FP enabled with the secrets) and
//!   exit: WFI forever, PSCI CPU_OFF, or PSCI SYSTEM_OFF;
//! - `victim`: a fresh vCPU started after the attackers, which reads its own registers first
//!   thing and must see reset values (FP/SIMD and TPIDR* zero) and none of the secrets.
//!
//! EL0 services run after each attacker (`tests/images/hostile-guest-state.toml`) and check what
//! the attacker's state would do to them (`hostile-el0-witness`, `hostile-fp-user`).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("state", run);

mod secrets;

#[cfg(target_os = "none")]
mod attack;
#[cfg(target_os = "none")]
mod victim;

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::Outcome;
    // The victim reads its registers before anything else can change them.
    let mut buffer = [0u8; 64];
    match hostile_guest_common::role(&mut buffer) {
        "victim" => victim::run(),
        "attack-wfi" => attack::run(attack::Exit::Wfi),
        "attack-cpu-off" => attack::run(attack::Exit::CpuOff),
        "attack-system-off" => attack::run(attack::Exit::SystemOff),
        _ => Outcome::Skip("no role: run me with cmdline victim or attack-wfi|cpu-off|system-off"),
    }
}
