//! The witness of the hostile-guest suite (`docs/hostile-guests.md`, item A): an EL0 service
//! that runs right after a hostile guest has written every EL1 control that governs EL0 —
//! SCTLR_EL1.E0E = 1 (big-endian EL0) and A = 1 (alignment checks), UCT = DZE = UCI = 0,
//! CNTKCTL_EL1 = 0 or 0x303, CPACR_EL1.FPEN = 0, TPIDR_EL0/TPIDRRO_EL0 = secrets — and left it
//! in the CPU. Services run at EL0 with HCR_EL2.{TGE, E2H} = {1, 0}, under which those
//! registers still apply (Arm ARM DDI 0487, D24.2.48 HCR_EL2.TGE), so the kernel must run them
//! with a profile of its own. The witness checks what that profile gives a service: the virtual
//! counter (`CNTVCT_EL0`) readable and advancing, unaligned loads that work and read
//! little-endian, stores that land little-endian, `CTR_EL0` and `DC ZVA` usable, and thread
//! registers that hold no guest's secret. Each check prints one line; the last is `witness: ok`
//! or `witness: FAILED (n check(s))`. A check the kernel stops it for shows as the kernel's
//! `service '…' faulted` line instead.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_rt::service!(run);

/// The top half of every secret the hostile guests write (`hostile-guest-state`).
#[cfg(any(target_os = "none", test))]
const SECRET_TAG: u64 = 0x5ec2_e700;

/// Whether `value` is one of the hostile guests' secrets.
#[cfg(any(target_os = "none", test))]
const fn is_secret(value: u64) -> bool {
    value >> 32 == SECRET_TAG
}

/// The value an unaligned 8-byte little-endian load at offset 1 of a buffer holding 0, 1, 2, …
/// reads.
#[cfg(any(target_os = "none", test))]
const UNALIGNED_LITTLE_ENDIAN: u64 = 0x0807_0605_0403_0201;

#[cfg(target_os = "none")]
mod el0 {
    use super::{UNALIGNED_LITTLE_ENDIAN, is_secret};
    use capvisor_rt::println;
    use core::arch::asm;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    static mut BUFFER: Page = Page([0; 4096]);

    fn buffer() -> *mut u8 {
        (&raw mut BUFFER).cast()
    }

    struct Checks {
        failed: u32,
    }

    impl Checks {
        fn check(&mut self, ok: bool, line: core::fmt::Arguments<'_>) {
            let verdict = if ok { "ok" } else { "WRONG" };
            println!("witness: {line}: {verdict}");
            if !ok {
                self.failed += 1;
            }
        }
    }

    pub fn run() -> u64 {
        let mut checks = Checks { failed: 0 };
        counter(&mut checks);
        unaligned(&mut checks);
        endianness(&mut checks);
        thread_registers(&mut checks);
        cache_type(&mut checks);
        zero_by_va(&mut checks);
        if checks.failed == 0 {
            println!("witness: ok");
            0
        } else {
            println!("witness: FAILED ({} check(s))", checks.failed);
            1
        }
    }

    /// CNTVCT_EL0 readable (CNTKCTL_EL1.EL0VCTEN) and advancing.
    fn counter(checks: &mut Checks) {
        let first = capvisor_rt::counter();
        let mut second = first;
        for _ in 0..1000 {
            second = capvisor_rt::counter();
            if second > first {
                break;
            }
        }
        checks.check(
            second > first,
            format_args!("counter read at EL0 and advancing ({first:#x} then {second:#x})"),
        );
    }

    /// An unaligned LDR (SCTLR_EL1.A = 0) that reads little-endian (SCTLR_EL1.E0E = 0).
    fn unaligned(checks: &mut Checks) {
        let base = buffer();
        for i in 0..16u8 {
            // SAFETY: the buffer is this service's own static, 4 KiB long.
            unsafe { base.add(usize::from(i)).write_volatile(i) };
        }
        let value: u64;
        // SAFETY: an 8-byte load at offset 1 of the buffer, inside it.
        unsafe {
            asm!("ldr {v}, [{a}, #1]", v = out(reg) value, a = in(reg) base, options(nostack));
        }
        checks.check(
            value == UNALIGNED_LITTLE_ENDIAN,
            format_args!("unaligned 8-byte load at offset 1 reads {value:#x}"),
        );
    }

    /// An 8-byte store whose lowest-addressed byte is its least significant (E0E = 0).
    fn endianness(checks: &mut Checks) {
        let base = buffer();
        let byte: u64;
        // SAFETY: an aligned store and a byte load inside the buffer.
        unsafe {
            asm!(
                "str {v}, [{a}, #64]",
                "ldrb {b:w}, [{a}, #64]",
                v = in(reg) 0x1122_3344_5566_7788u64,
                a = in(reg) base,
                b = out(reg) byte,
                options(nostack)
            );
        }
        checks.check(
            byte == 0x88,
            format_args!("first byte of the stored 0x1122334455667788 is {byte:#x}"),
        );
    }

    /// TPIDR_EL0 and TPIDRRO_EL0 hold no guest's secret.
    fn thread_registers(checks: &mut Checks) {
        let (tpidr, tpidrro): (u64, u64);
        // SAFETY: reading EL0's thread ID registers has no side effects.
        unsafe {
            asm!("mrs {0}, tpidr_el0", "mrs {1}, tpidrro_el0", out(reg) tpidr, out(reg) tpidrro,
                options(nomem, nostack));
        }
        checks.check(
            !is_secret(tpidr) && !is_secret(tpidrro),
            format_args!("TPIDR_EL0 {tpidr:#x} TPIDRRO_EL0 {tpidrro:#x}, no guest's secret"),
        );
    }

    /// CTR_EL0 readable at EL0 (SCTLR_EL1.UCT = 1 in the services' profile).
    fn cache_type(checks: &mut Checks) {
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effects.
        unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
        checks.check(ctr != 0, format_args!("CTR_EL0 read at EL0: {ctr:#x}"));
    }

    /// DC ZVA zeroes a block (SCTLR_EL1.DZE = 1), unless DCZID_EL0.DZP prohibits it.
    fn zero_by_va(checks: &mut Checks) {
        let dczid: u64;
        // SAFETY: reading DCZID_EL0 has no side effects (always accessible at EL0).
        unsafe { asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack)) };
        if dczid & (1 << 4) != 0 {
            println!("witness: DC ZVA prohibited by DCZID_EL0 ({dczid:#x}): not checked");
            return;
        }
        let block = 4usize << (dczid & 0xf);
        // SAFETY: the second half of the buffer, 2 KiB aligned, holds the block (at most 2 KiB).
        let target = unsafe { buffer().add(2048) };
        for i in 0..block {
            // SAFETY: inside the buffer.
            unsafe { target.add(i).write_volatile(0xa5) };
        }
        // SAFETY: zeroing a block of the service's own buffer.
        unsafe { asm!("dc zva, {}", "dsb ish", in(reg) target, options(nostack)) };
        // SAFETY: inside the buffer.
        let zeroed = (0..block).all(|i| unsafe { target.add(i).read_volatile() } == 0);
        checks.check(
            zeroed,
            format_args!("DC ZVA zeroed a {block}-byte block at EL0"),
        );
    }
}

#[cfg(target_os = "none")]
fn run() -> u64 {
    el0::run()
}

/// Without the kernel there is nothing to check: the host program does nothing.
#[cfg(not(target_os = "none"))]
fn run() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_the_little_endian_value() {
        assert!(is_secret(0x5ec2_e700_0000_00e0));
        assert!(!is_secret(0));
        assert_eq!(
            UNALIGNED_LITTLE_ENDIAN,
            u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])
        );
    }
}
