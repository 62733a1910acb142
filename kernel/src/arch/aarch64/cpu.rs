//! Reads of the CPU's identification and control registers.

use aarch64_cpu::registers::{
    ID_AA64ISAR0_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1, MIDR_EL1, MPIDR_EL1,
    Readable,
};
use core::arch::asm;

/// CTR_EL0 (not among `aarch64-cpu`'s registers).
fn ctr_el0() -> u64 {
    let value: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}
use capvisor_kernel::platform::IdRegisters;

/// The ID registers the platform description is decoded from.
#[must_use]
pub fn id_registers() -> IdRegisters {
    IdRegisters {
        midr: MIDR_EL1.get(),
        mmfr0: ID_AA64MMFR0_EL1.get(),
        mmfr1: ID_AA64MMFR1_EL1.get(),
        mmfr2: ID_AA64MMFR2_EL1.get(),
        ctr: ctr_el0(),
        isar0: ID_AA64ISAR0_EL1.get(),
    }
}

/// The smallest data cache line, from CTR_EL0.DminLine (log2 of words), in bytes.
#[must_use]
pub fn dcache_line_size() -> usize {
    4 << ((ctr_el0() >> 16) & 0xf)
}

/// This CPU's affinity (MPIDR_EL1 Aff3..Aff0), as PSCI and the device tree name it.
#[must_use]
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}
