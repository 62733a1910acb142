//! Test guest `wfi` (`docs/hostile-guests.md`, item G): a guest that can only wait must not
//! keep others from running, and accesses a VMM cannot emulate get the Arm ARM's answer. Three
//! roles (the manifest's `cmdline`):
//! - `sleeper`: IRQs masked, no GIC, no timer: WFI in a loop — nothing can wake it;
//! - `sleeper-masked`: its virtual timer fires, but its GIC priority mask (ICC_PMR_EL1 = 0)
//!   keeps the interrupt from being signalled, so it cannot end a WFI either (GIC IHI 0069H,
//!   "the virtual CPU interface signals a virtual interrupt only if its priority is higher than
//!   the priority mask"; Arm ARM DDI 0487 D1.6.2 "Wait for Interrupt"): WFI in a loop;
//! - `mmio`: an LDP from and an STP to the emulated GIC distributor (a data abort with
//!   ISS.ISV = 0, which the VMM cannot emulate: it injects a synchronous external abort, EC
//!   0x25, DFSC 0x10, FAR the address, as for an unmapped address in the guest contract), and
//!   unaligned LDRs from the distributor with the MMU off and on (Device memory at stage 1: an
//!   alignment fault, EC 0x25, DFSC 0x21, which comes before any stage 2 fault, Arm ARM DDI
//!   0487 R_XCHFJ); an unaligned LDR from RAM with the MMU off is shown, not checked.
//!
//! A sleeper whose WFI returns 100000 times says so and powers off (so the image goes on and
//! shows it); otherwise it sleeps until the system ends.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("wfi", run);

#[cfg(target_os = "none")]
mod roles;

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    use capvisor_guest_rt::Outcome;
    let mut buffer = [0u8; 64];
    match hostile_guest_common::role(&mut buffer) {
        "sleeper" => roles::sleeper(false),
        "sleeper-masked" => roles::sleeper(true),
        "mmio" => roles::mmio(),
        _ => Outcome::Skip("no role: run me with cmdline sleeper, sleeper-masked or mmio"),
    }
}
