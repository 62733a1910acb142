//! How the kernel ends: PSCI SYSTEM_OFF, or, when started with `capvisor.exit=semihosting`
//! (as `capvisor run` and the tests do), a semihosting exit that carries a status to QEMU's exit
//! code.

use crate::arch::aarch64::firmware;
use capvisor_kernel::bootargs::ExitMethod;
use core::sync::atomic::{AtomicBool, Ordering};

static SEMIHOSTING: AtomicBool = AtomicBool::new(false);

/// The statuses the kernel exits with (QEMU's exit code under semihosting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Everything worked.
    Success = 0,
    /// An unexpected exception in the kernel.
    KernelFault = 1,
    /// A Rust panic in the kernel.
    Panic = 2,
    /// The image or the platform was refused (bad image, unmet requirements, bad device tree).
    Refused = 3,
    /// A service stopped the system reporting a failure (`DebugHalt` with a non-zero status).
    ServiceFailure = 4,
}

/// Chooses how to exit.
pub fn set_method(method: ExitMethod) {
    SEMIHOSTING.store(method == ExitMethod::Semihosting, Ordering::Relaxed);
}

/// Stops the machine after a success.
pub fn success() -> ! {
    crate::println!("capvisor: powering off");
    stop(Status::Success)
}

/// Stops the machine after a failure the console has already explained.
pub fn fail(status: Status) -> ! {
    crate::console::print_raw(format_args!(
        "capvisor: stopping with status {} ({:?})\n",
        status as u32, status
    ));
    stop(status)
}

fn stop(status: Status) -> ! {
    let overflowed = crate::arch::aarch64::boot::overflowed_stacks();
    if overflowed != 0 {
        crate::console::print_raw(format_args!(
            "capvisor: KERNEL BUG: a kernel stack overflowed into its last {} bytes (CPUs {overflowed:#b}); \
             memory below it may be corrupted\n",
            crate::arch::aarch64::boot::STACK_RED_ZONE
        ));
    }
    let status = if overflowed != 0 && matches!(status, Status::Success) {
        Status::Panic
    } else {
        status
    };
    if SEMIHOSTING.load(Ordering::Relaxed) {
        firmware::semihosting_exit(status as u32);
    }
    // PSCI 1.1 (DEN0022D) 5.10 SYSTEM_OFF: does not return on success.
    let _ = firmware::psci_system_off();
    loop {
        // If SYSTEM_OFF failed there is nothing better to do.
        crate::arch::aarch64::cpu::wait_for_interrupt();
    }
}
