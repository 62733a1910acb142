//! The guest contract of `docs/guests.md`: the addresses, calls and fault syndromes a VMM gives
//! every capvisor test guest. The VMM service implements the same numbers.

/// Guest RAM's IPA (unless the manifest asks for `ram_identity`).
pub const RAM_BASE: u64 = 0x4000_0000;
/// Where in RAM the kernel `Image` is loaded, and its header's `text_offset`.
pub const TEXT_OFFSET: u64 = 0x20_0000;
/// The load (and entry) address of a guest kernel for RAM at [`RAM_BASE`] (the test guests are
/// position-independent: with `ram_identity` they run wherever their RAM is).
pub const LOAD_ADDRESS: u64 = RAM_BASE + TEXT_OFFSET;
/// The least guest RAM the test guests use (their test pages reach up to here).
pub const MIN_RAM_SIZE: u64 = 16 << 20;
/// Where in RAM the boot count is: a little-endian `u64` the VMM writes before each start (1, 2,
/// …); 0 means no VMM.
pub const BOOT_COUNT_OFFSET: u64 = 0x10_0000;
/// The boot count's IPA for RAM at [`RAM_BASE`].
pub const BOOT_COUNT_ADDRESS: u64 = RAM_BASE + BOOT_COUNT_OFFSET;
/// The console: byte stores here print (PL011 UARTDR on QEMU's `virt` board).
pub const CONSOLE_ADDRESS: u64 = 0x0900_0000;
/// An IPA outside RAM and every emulated device: an access gets a synchronous external abort.
pub const UNMAPPED_ADDRESS: u64 = 0x10_0000_0000;

// The boot count lies in RAM below the kernel; the unmapped address beyond any test guest's RAM.
const _: () = assert!(LOAD_ADDRESS == 0x4020_0000);
const _: () = assert!(BOOT_COUNT_ADDRESS >= RAM_BASE && BOOT_COUNT_ADDRESS + 8 <= LOAD_ADDRESS);
const _: () = assert!(UNMAPPED_ADDRESS >= RAM_BASE + MIN_RAM_SIZE);

/// PSCI function identifiers (PSCI 1.1, DEN0022D, 5.1 "Function prototypes"), called with
/// `hvc #0` (SMCCC 1.1, DEN0028).
pub mod psci {
    /// `PSCI_VERSION`.
    pub const VERSION: u32 = 0x8400_0000;
    /// `CPU_ON`, SMC64.
    pub const CPU_ON: u32 = 0xC400_0003;
    /// `SYSTEM_OFF`.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// `SYSTEM_RESET`.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// `PSCI_FEATURES`.
    pub const FEATURES: u32 = 0x8400_000A;
}

/// ESR_EL1 fields (Arm ARM DDI 0487 K.a, D24.2.40 "ESR_EL1, Exception Syndrome Register (EL1)").
pub mod esr {
    /// EC for a data abort taken without a change in exception level.
    pub const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
    /// DFSC for a synchronous external abort, not on a translation table walk.
    pub const DFSC_SYNC_EXTERNAL: u64 = 0b01_0000;

    /// The exception class, ESR bits [31:26].
    #[must_use]
    pub const fn class(esr: u64) -> u64 {
        (esr >> 26) & 0x3f
    }

    /// The data fault status code, ESR bits [5:0] (for data aborts).
    #[must_use]
    pub const fn dfsc(esr: u64) -> u64 {
        esr & 0x3f
    }

    /// FnV, ESR bit 10: FAR is not valid.
    #[must_use]
    pub const fn far_not_valid(esr: u64) -> bool {
        esr & (1 << 10) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esr_fields() {
        // A data abort at EL1, IL=1, DFSC synchronous external abort.
        let esr = (0x25 << 26) | (1 << 25) | 0x10;
        assert_eq!(esr::class(esr), esr::EC_DATA_ABORT_SAME_EL);
        assert_eq!(esr::dfsc(esr), esr::DFSC_SYNC_EXTERNAL);
        assert!(!esr::far_not_valid(esr));
        assert!(esr::far_not_valid(esr | 1 << 10));
    }
}
