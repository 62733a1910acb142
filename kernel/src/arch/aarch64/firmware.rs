//! Calls out of the kernel: PSCI to the firmware (by SMC: from EL2, HVC would trap to the kernel
//! itself) and the semihosting exit a debugger or QEMU answers.

/// PSCI CPU_ON (PSCI 1.1, DEN0022D, 5.6): starts the CPU with affinity `mpidr` at the physical
/// address `entry`, with x0 = `context`.
///
/// # Errors
/// The firmware's answer (already on, denied, invalid parameters...).
pub fn psci_cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), smccc::psci::Error> {
    smccc::psci::cpu_on::<smccc::Smc>(mpidr, entry, context)
}

/// PSCI SYSTEM_OFF (PSCI 1.1, DEN0022D, 5.10): does not return on success.
///
/// # Errors
/// The firmware's answer when it did not power the system off.
pub fn psci_system_off() -> Result<(), smccc::psci::Error> {
    smccc::psci::system_off::<smccc::Smc>()
}

/// Semihosting SYS_EXIT (operation 0x18) with ADP_Stopped_ApplicationExit and a status
/// (Arm "Semihosting for AArch32 and AArch64", version 3.0, 6.4.1; the HLT #0xF000 trap is the
/// A64 semihosting call). Retries if no debugger answers.
pub fn semihosting_exit(status: u32) -> ! {
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    loop {
        // SAFETY: the debugger (QEMU) reads the two-word parameter block and ends the run; the
        // block outlives the call. If no debugger answers, the loop tries again.
        unsafe {
            core::arch::asm!(
                "hlt #0xf000",
                in("x0") SYS_EXIT,
                in("x1") block.as_ptr(),
                options(nostack, readonly)
            );
        }
    }
}
