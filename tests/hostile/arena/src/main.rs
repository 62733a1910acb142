//! Issue 13, finding 4 (`docs/hostile.md`): objects cheaper than what they consume. From a
//! small untyped (128 KiB, retyped from the root's) the service retypes the smallest CNodes,
//! then endpoints, then vCPUs, each until refused, then one 4 KiB frame. A fixed kernel charges
//! each object at least 4 KiB, so the refusals are `NotEnoughMemory` because the untyped is
//! used up (the frame is refused too), and the bystander still creates a CNode and a vCPU from
//! its own untyped. On the kernel of 8f4ed9c the kernel's fixed arenas (64 CNodes, 128
//! endpoints, 16 vCPUs) run out first, for everyone, while the untyped still has room.
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
