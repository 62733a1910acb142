//! Test guest `features`: what a guest sees of the CPU's features whose state the hypervisor's
//! world switch does not switch (`capvisor_kernel::idregs`, `arch/aarch64/cpu.rs`):
//! 1. the feature ID registers (trapped by HCR_EL2.TID3, answered by the kernel) show no SVE,
//!    SME, pointer authentication, MTE, PMU, SPE or trace, and a physical address size no larger
//!    than the VM's 39-bit IPA space (36 bits);
//! 2. the debug registers are the guest's own (trapped by MDCR_EL2.TDA and kept per vCPU by the
//!    kernel, `capvisor_kernel::vsysreg`): a write of MDSCR_EL1.MDE (bit 15) reads back, and
//!    clearing it reads back too.
//!
//! It prints the fields it read, so the QEMU test can compare a model that has the features
//! (`max`) with one that has not (`cortex-a57`). Without a VMM (bare QEMU) it skips.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("features", run);

/// Field `[shift + 3 : shift]` of `value`.
#[cfg(any(target_os = "none", test))]
const fn nibble(value: u64, shift: u32) -> u64 {
    (value >> shift) & 0xf
}

#[cfg(target_os = "none")]
mod run_on_target {
    use core::arch::asm;

    use capvisor_guest_rt::{Outcome, boot_count, println};

    use super::nibble;

    macro_rules! read {
        ($reg:literal) => {{
            let value: u64;
            // SAFETY: reading a system register at EL1 (an ID register traps to EL2 and is
            // answered there); no memory effects.
            unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack)) };
            value
        }};
    }

    pub fn run() -> Outcome {
        if boot_count() == 0 {
            return Outcome::Skip("no VMM (boot count 0): nothing traps the ID registers");
        }
        let pfr0 = read!("id_aa64pfr0_el1");
        let pfr1 = read!("id_aa64pfr1_el1");
        let isar1 = read!("id_aa64isar1_el1");
        let dfr0 = read!("id_aa64dfr0_el1");
        let mmfr0 = read!("id_aa64mmfr0_el1");
        let zfr0 = read!("S3_0_C0_C4_4");
        println!(
            "sve={} sme={} mte={} pauth={} pmu={} spe={} trace={} pa_range={} zfr0={zfr0:#x}",
            nibble(pfr0, 32),
            nibble(pfr1, 24),
            nibble(pfr1, 8),
            nibble(isar1, 4) | nibble(isar1, 8) | nibble(isar1, 24) | nibble(isar1, 28),
            nibble(dfr0, 8),
            nibble(dfr0, 32),
            nibble(dfr0, 4),
            nibble(mmfr0, 0),
        );
        let hidden = [
            nibble(pfr0, 32),
            nibble(pfr1, 24),
            nibble(pfr1, 8),
            nibble(isar1, 4),
            nibble(isar1, 8),
            nibble(isar1, 24),
            nibble(isar1, 28),
            nibble(dfr0, 8),
            nibble(dfr0, 32),
            nibble(dfr0, 4),
            zfr0,
        ];
        if hidden.iter().any(|&field| field != 0) {
            return Outcome::Fail("an ID register advertises a feature the world switch drops");
        }
        if nibble(mmfr0, 0) > 1 {
            return Outcome::Fail("the physical address size exceeds the VM's IPA space");
        }
        let mdscr: u64;
        // SAFETY: setting MDSCR_EL1.MDE (monitor debug events) with no breakpoint programmed, then
        // reading it back: under the hypervisor both accesses trap (MDCR_EL2.TDA) and the
        // kernel keeps the value for this vCPU.
        unsafe {
            asm!(
                "mrs {t}, mdscr_el1",
                "orr {t}, {t}, #(1 << 15)",
                "msr mdscr_el1, {t}",
                "isb",
                "mrs {t}, mdscr_el1",
                t = out(reg) mdscr,
                options(nomem, nostack)
            );
        }
        println!("MDSCR_EL1 after setting MDE: {mdscr:#x}");
        if mdscr & (1 << 15) == 0 {
            return Outcome::Fail("MDSCR_EL1.MDE did not stick: the guest has no debug");
        }
        let cleared: u64;
        // SAFETY: clearing MDE again, and reading it back.
        unsafe {
            asm!(
                "msr mdscr_el1, xzr",
                "isb",
                "mrs {t}, mdscr_el1",
                t = out(reg) cleared,
                options(nomem, nostack)
            );
        }
        if cleared != 0 {
            return Outcome::Fail("MDSCR_EL1 did not read back as written");
        }
        Outcome::Pass
    }
}

#[cfg(target_os = "none")]
use run_on_target::run;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_are_id_register_fields() {
        assert_eq!(nibble(0x0000_0001_0000_0000, 32), 1);
        assert_eq!(nibble(0x1234, 4), 3);
    }
}
