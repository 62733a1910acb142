//! The bystander of the hostile suite (`docs/hostile.md`): a service in every hostile image that
//! runs after the attackers (the lowest priority) and checks that the system still works for
//! it. From its own untyped it retypes an endpoint, a notification, a CNode and a vCPU; it maps
//! frames into its own space and writes them; it creates an address space and maps a frame into
//! it; it makes a thread that answers an IPC round trip; it reads the counter. Then it signals
//! every endpoint it was granted (an attacker may wait there), prints `bystander: ok` (or each
//! failed step and `bystander: FAILED`) and halts the system with status 0 (1 on failure).
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

#[cfg(target_os = "none")]
mod el0;

#[cfg(target_os = "none")]
fn run() -> u64 {
    el0::run()
}

/// Without the kernel there is nothing to check: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}
