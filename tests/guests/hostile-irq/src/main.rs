//! Test guest `interrupts` (`docs/hostile-guests.md`, item F): interrupt patterns a hostile
//! guest can make, and the pending and active state the emulated GIC must show (GIC
//! Architecture Specification IHI 0069H: 12.9 GICD_ISPENDR<n>/ICPENDR<n>/ISACTIVER<n>, 12.11
//! GICR_ISPENDR0/ICPENDR0/ISACTIVER0 — one bit per INTID, reading the interrupt's state).
//! With IRQs masked at PSTATE throughout, it acknowledges by reading ICC_IAR1_EL1 itself:
//! 1. SGI 3 sent to itself is pending in GICR_ISPENDR0; GICR_ICPENDR0 clears it (nothing left
//!    to acknowledge);
//! 2. SGI 4, acknowledged, is active in GICR_ISACTIVER0 until its EOI;
//! 3. its virtual timer, fired while masked at PSTATE, is pending in GICR_ISPENDR0 (bit 27);
//!    once the timer is masked (IMASK, the level drops) GICR_ICPENDR0 clears it;
//! 4. SPI 40, made pending by GICD_ISPENDR1, is pending there, then active in GICD_ISACTIVER1
//!    once acknowledged, inactive after its EOI; made pending again, GICD_ICPENDR1 clears it;
//! 5. the attack: with split priority drop and deactivation (ICC_CTLR_EL1.EOImode = 1) it sends
//!    itself all 16 SGIs — more than the list registers hold — finds them all pending,
//!    acknowledges and ends each but never deactivates one, takes its virtual timer the same
//!    way, finds them all active, and waits in WFI forever holding them.
//!
//! Another guest's virtual timer must keep interrupting it meanwhile (guest-irq, in
//! `tests/images/hostile-guest-irq.toml`), and the bystander must run.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("interrupts", run);

#[cfg(target_os = "none")]
mod checks;

#[cfg(target_os = "none")]
fn run() -> capvisor_guest_rt::Outcome {
    checks::run()
}
