//! Issue 13, finding 2 (`docs/hostile.md`): unbounded kernel work. The service retypes a Vm of
//! its own and asks for maintenance over its whole 39-bit IPA space: `TlbInvalidateIpa` over
//! [0, 2^39), which a fixed kernel does by VMID (`Ok`), and `CleanInvalidatePoc` over the same
//! range, which it refuses (`RangeError`: more than 2 MiB) — a clean over 2 MiB is still `Ok`.
//! On the kernel of 8f4ed9c the invalidation walks the range page by page with interrupts
//! masked: minutes under QEMU, during which nothing else runs.
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
