//! Issue 13, finding 6 (`docs/hostile.md`): interrupts the kernel owns. This service must be its
//! image's root (it holds IrqControl). It asks for handlers of the EL2 hypervisor timer (PPI 26,
//! the kernel's time slices), the virtual timer (27) and other INTIDs below 32, which a fixed
//! kernel refuses with `RangeError`; where a handler is issued anyway it forwards it to a vCPU
//! and stops forwarding it (on the kernel of 8f4ed9c that masks the interrupt, even the tick).
//! With a handler of an SPI copied without WRITE it tries IrqAck, IrqSetNotification and
//! IrqForwardToVcpu (`InsufficientRights`), and with WRITE a forward as a non-SPI vINTID
//! (refused). It deletes its handlers and then spins without yielding: only the kernel's tick
//! can preempt it, so the bystander, at the same priority, runs only if the tick still works.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
mod el0;

#[cfg(target_os = "none")]
fn run() -> u64 {
    el0::run()
}

/// Without the kernel there is nothing to attack: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}
