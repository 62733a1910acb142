//! How the kernel ends: PSCI SYSTEM_OFF, or, when started with `capvisor.exit=semihosting`
//! (as `capvisor run` and the tests do), a semihosting exit that carries a status to QEMU's exit
//! code.

use capvisor_kernel::bootargs::ExitMethod;
use core::arch::asm;
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
        semihosting_exit(status as u32);
    }
    // PSCI 1.1 (DEN0022D) 5.10 SYSTEM_OFF: does not return on success.
    let _ = smccc::psci::system_off::<smccc::Smc>();
    loop {
        // SAFETY: WFI only waits; if SYSTEM_OFF failed there is nothing better to do.
        unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
    }
}

/// Semihosting SYS_EXIT (operation 0x18) with ADP_Stopped_ApplicationExit and a status
/// (Arm "Semihosting for AArch32 and AArch64", version 3.0, 6.4.1; the HLT #0xF000 trap is the
/// A64 semihosting call).
fn semihosting_exit(status: u32) -> ! {
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    loop {
        // SAFETY: the debugger (QEMU) reads the two-word parameter block and ends the run; the
        // block outlives the call. If no debugger answers, the loop tries again.
        unsafe {
            asm!(
                "hlt #0xf000",
                in("x0") SYS_EXIT,
                in("x1") block.as_ptr(),
                options(nostack, readonly)
            );
        }
    }
}
