//! Test guest `psci`: the firmware calls a guest makes (PSCI 1.1, Arm DEN0022; SMCCC 1.1, Arm
//! DEN0028) are answered as those specifications say, by `hvc` and by `smc` (issue 14, item 8):
//! 1. the function ID is W0 (junk in the upper half of X0 is ignored), and an SMC32 function's
//!    arguments are W1–W3 (junk in the upper halves is ignored; an SMC64 function's are not);
//! 2. `PSCI_FEATURES` lists `AFFINITY_INFO` (both forms) and `SMCCC_VERSION`;
//! 3. `AFFINITY_INFO` says ON for this vCPU, OFF for vCPU 1 before `CPU_ON`, ON while it runs
//!    (started with `CPU_ON` at a small entry that sets a flag, then spins until told to stop),
//!    OFF after its `CPU_OFF`, and `INVALID_PARAMETERS` for a vCPU that does not exist, a level
//!    above 3 or bits outside the affinity fields; `CPU_ON` of a running vCPU is `ALREADY_ON`;
//! 4. `SMCCC_VERSION` is 1.1 and `SMCCC_ARCH_FEATURES` (mandatory in 1.1) answers 0 for itself
//!    and `SMCCC_VERSION`, `NOT_SUPPORTED` for an unknown function, and for the three Spectre
//!    workarounds whatever the platform truthfully offers — printed, for `tests/tests/guests.rs`
//!    to compare with the CPU model — with each workaround call consistent with its answer.
//!
//! Needs two vCPUs (`tests/images/guest-psci.toml`). Without a VMM (bare QEMU, boot count 0) it
//! skips: QEMU's own firmware speaks SMCCC 1.0.
#![cfg_attr(target_os = "none", no_std, no_main)]

capvisor_guest_rt::guest!("psci", run);

/// Function IDs (DEN0022 5.1, DEN0028 "Arm Architecture Calls").
#[cfg(target_os = "none")]
mod id {
    pub const PSCI_VERSION: u64 = 0x8400_0000;
    pub const CPU_ON_64: u64 = 0xC400_0003;
    pub const AFFINITY_INFO_32: u64 = 0x8400_0004;
    pub const AFFINITY_INFO_64: u64 = 0xC400_0004;
    pub const PSCI_FEATURES: u64 = 0x8400_000A;
    pub const SMCCC_VERSION: u64 = 0x8000_0000;
    pub const ARCH_FEATURES: u64 = 0x8000_0001;
    pub const WORKAROUND_1: u64 = 0x8000_8000;
    pub const WORKAROUND_2: u64 = 0x8000_7FFF;
    pub const WORKAROUND_3: u64 = 0x8000_3FFF;
}

/// `SUCCESS`.
#[cfg(any(target_os = "none", test))]
const SUCCESS: i64 = 0;
/// `NOT_SUPPORTED`.
#[cfg(any(target_os = "none", test))]
const NOT_SUPPORTED: i64 = -1;

/// Return values.
#[cfg(target_os = "none")]
mod ret {
    pub(crate) use super::{NOT_SUPPORTED, SUCCESS};
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const ALREADY_ON: i64 = -4;
    pub const ON: i64 = 0;
    pub const OFF: i64 = 1;
}

/// What calling a workaround must return, given `SMCCC_ARCH_FEATURES`' answer for it: nothing
/// to do (0) where the feature exists or is not required (-2), `NOT_SUPPORTED` otherwise.
#[cfg(any(target_os = "none", test))]
const fn expected_call(feature: i64) -> i64 {
    if feature >= 0 || feature == -2 {
        SUCCESS
    } else {
        NOT_SUPPORTED
    }
}

#[cfg(target_os = "none")]
mod run_on_target {
    use core::arch::{asm, global_asm};
    use core::sync::atomic::{AtomicU64, Ordering};

    use capvisor_guest_rt::{Outcome, boot_count, println};

    use super::{expected_call, id, ret};

    /// Upper halves an SMC32 callee must ignore.
    const JUNK: u64 = 0xdead_beef_0000_0000;

    // vCPU 1's entry (CPU_ON; x0 = the context: the address of `SECONDARY`): it runs with its
    // MMU off, like the first vCPU, so its stores and loads are non-cacheable and meet vCPU 0's
    // (also MMU off). It sets word 0, spins until word 1 is set, then calls CPU_OFF.
    global_asm!(
        ".section .text.psci_secondary, \"ax\"",
        ".global psci_secondary",
        "psci_secondary:",
        "    mov     x1, #1",
        "    str     x1, [x0]",
        "1:  ldr     x1, [x0, #8]",
        "    cbz     x1, 1b",
        // CPU_OFF, 0x8400_0002.
        "    mov     x0, #0x0002",
        "    movk    x0, #0x8400, lsl #16",
        "    hvc     #0",
        "2:  wfi",
        "    b       2b",
    );

    unsafe extern "C" {
        fn psci_secondary();
    }

    /// vCPU 1's flags: [0] it started, [1] it may stop.
    static SECONDARY: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

    /// A call by `hvc #0` with the whole of x0–x3, returning x0 as a signed value.
    fn hvc(x0: u64, x1: u64, x2: u64, x3: u64) -> i64 {
        let mut result = x0;
        // SAFETY: a firmware call changes no memory of this guest; x0–x17 may be changed.
        unsafe {
            asm!("hvc #0",
                inout("x0") result, inout("x1") x1 => _, inout("x2") x2 => _,
                inout("x3") x3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack));
        }
        result as i64
    }

    /// The same call by `smc #0` (trapped to the hypervisor by HCR_EL2.TSC).
    fn smc(x0: u64, x1: u64, x2: u64, x3: u64) -> i64 {
        let mut result = x0;
        // SAFETY: as for `hvc`.
        unsafe {
            asm!("smc #0",
                inout("x0") result, inout("x1") x1 => _, inout("x2") x2 => _,
                inout("x3") x3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack));
        }
        result as i64
    }

    /// Counts the checks and prints each that failed.
    struct Checks {
        run: u32,
        failed: u32,
    }

    impl Checks {
        fn expect(&mut self, what: &str, got: i64, expected: i64) {
            self.run += 1;
            if got != expected {
                self.failed += 1;
                println!("check {what}: got {got}, expected {expected}");
            }
        }
    }

    fn flag(index: usize) -> u64 {
        // SAFETY: the flag's word, aligned, in this guest's RAM; read once, volatile, as the
        // MMU is off (a non-cacheable load that sees vCPU 1's store).
        unsafe { core::ptr::read_volatile(SECONDARY[index].as_ptr()) }
    }

    /// Polls until `done` holds, at most `tries` times (each poll is a call to the VMM, which
    /// lets vCPU 1 run); whether it held.
    fn wait(tries: u32, mut done: impl FnMut() -> bool) -> bool {
        (0..tries).any(|_| done())
    }

    fn calls_and_arguments(c: &mut Checks) {
        c.expect(
            "PSCI_VERSION, junk in X0[63:32]",
            hvc(JUNK | id::PSCI_VERSION, 0, 0, 0),
            0x1_0001,
        );
        c.expect(
            "PSCI_VERSION by smc",
            smc(id::PSCI_VERSION, 0, 0, 0),
            0x1_0001,
        );
        for (what, function) in [
            ("PSCI_FEATURES(AFFINITY_INFO_32)", id::AFFINITY_INFO_32),
            ("PSCI_FEATURES(AFFINITY_INFO_64)", id::AFFINITY_INFO_64),
            ("PSCI_FEATURES(SMCCC_VERSION)", id::SMCCC_VERSION),
        ] {
            c.expect(what, hvc(id::PSCI_FEATURES, function, 0, 0), ret::SUCCESS);
            c.expect(
                what,
                hvc(id::PSCI_FEATURES, JUNK | function, 0, 0),
                ret::SUCCESS,
            );
        }
        let info = |target, level| hvc(id::AFFINITY_INFO_64, target, level, 0);
        c.expect("AFFINITY_INFO(0, 0)", info(0, 0), ret::ON);
        c.expect("AFFINITY_INFO(1, 0) before CPU_ON", info(1, 0), ret::OFF);
        c.expect(
            "AFFINITY_INFO_32(1, 0), junk",
            hvc(id::AFFINITY_INFO_32, JUNK | 1, JUNK, 0),
            ret::OFF,
        );
        c.expect(
            "AFFINITY_INFO_64(1, 0), junk",
            info(JUNK | 1, 0),
            ret::INVALID_PARAMETERS,
        );
        c.expect("AFFINITY_INFO(2, 0)", info(2, 0), ret::INVALID_PARAMETERS);
        c.expect("AFFINITY_INFO(0, 4)", info(0, 4), ret::INVALID_PARAMETERS);
        c.expect(
            "AFFINITY_INFO(1 << 24, 0)",
            info(1 << 24, 0),
            ret::INVALID_PARAMETERS,
        );
        c.expect("AFFINITY_INFO(0xff, 1)", info(0xff, 1), ret::ON);
        c.expect(
            "AFFINITY_INFO(0, 0) by smc",
            smc(id::AFFINITY_INFO_64, 0, 0, 0),
            ret::ON,
        );
    }

    fn secondary(c: &mut Checks) {
        let info = |target| hvc(id::AFFINITY_INFO_64, target, 0, 0);
        let entry = psci_secondary as unsafe extern "C" fn() as usize as u64;
        let context = SECONDARY.as_ptr() as u64;
        c.expect(
            "CPU_ON(1)",
            hvc(id::CPU_ON_64, 1, entry, context),
            ret::SUCCESS,
        );
        if !wait(100_000, || {
            info(1);
            flag(0) == 1
        }) {
            c.expect("vCPU 1 started", 0, 1);
            return;
        }
        c.expect("AFFINITY_INFO(1, 0) while it runs", info(1), ret::ON);
        c.expect(
            "CPU_ON(1) while it runs",
            hvc(id::CPU_ON_64, 1, entry, context),
            ret::ALREADY_ON,
        );
        SECONDARY[1].store(1, Ordering::Relaxed);
        // SAFETY: a barrier; the store above is non-cacheable (MMU off) and reaches vCPU 1.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
        let off = wait(100_000, || info(1) == ret::OFF);
        c.expect("AFFINITY_INFO(1, 0) after its CPU_OFF", info(1), ret::OFF);
        if off {
            println!("vCPU 1 started, was ON, called CPU_OFF and is OFF");
        }
    }

    fn smccc(c: &mut Checks) {
        let features = |function| hvc(id::ARCH_FEATURES, function, 0, 0);
        c.expect("SMCCC_VERSION", hvc(id::SMCCC_VERSION, 0, 0, 0), 0x1_0001);
        c.expect(
            "SMCCC_ARCH_FEATURES(SMCCC_VERSION)",
            features(id::SMCCC_VERSION),
            0,
        );
        c.expect(
            "SMCCC_ARCH_FEATURES(itself)",
            features(id::ARCH_FEATURES),
            0,
        );
        c.expect(
            "SMCCC_ARCH_FEATURES(0x800000ff)",
            features(0x8000_00ff),
            ret::NOT_SUPPORTED,
        );
        let mut answers = [0i64; 3];
        let mut calls = [0i64; 3];
        let functions = [id::WORKAROUND_1, id::WORKAROUND_2, id::WORKAROUND_3];
        for (n, &function) in functions.iter().enumerate() {
            answers[n] = features(function);
            c.expect(
                "SMCCC_ARCH_FEATURES(workaround), junk",
                features(JUNK | function),
                answers[n],
            );
            calls[n] = hvc(function, 1, 0, 0);
            c.expect("workaround call", calls[n], expected_call(answers[n]));
        }
        println!(
            "smccc workarounds: features wa1={} wa2={} wa3={}, calls wa1={} wa2={} wa3={}",
            answers[0], answers[1], answers[2], calls[0], calls[1], calls[2]
        );
    }

    pub fn run() -> Outcome {
        if boot_count() == 0 {
            return Outcome::Skip("no VMM (boot count 0): QEMU's firmware speaks SMCCC 1.0");
        }
        let mut checks = Checks { run: 0, failed: 0 };
        calls_and_arguments(&mut checks);
        secondary(&mut checks);
        smccc(&mut checks);
        println!("{} checks, {} failed", checks.run, checks.failed);
        if checks.failed == 0 {
            Outcome::Pass
        } else {
            Outcome::Fail("a PSCI or SMCCC answer is not what the specification says")
        }
    }
}

#[cfg(target_os = "none")]
use run_on_target::run;

#[cfg(test)]
mod tests {
    use super::{NOT_SUPPORTED, SUCCESS, expected_call};

    #[test]
    fn a_workaround_call_succeeds_where_its_feature_query_says_so() {
        assert_eq!(expected_call(0), SUCCESS);
        assert_eq!(expected_call(1), SUCCESS);
        assert_eq!(expected_call(-2), SUCCESS);
        assert_eq!(expected_call(-1), NOT_SUPPORTED);
    }
}
