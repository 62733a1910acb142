//! What a guest is told about the Spectre workarounds of SMCCC 1.1 (DEN0028, "Arm Architecture
//! Calls"; return values as DEN0070A and Trusted Firmware-A define them): the answers to
//! `SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_1, _2, _3)`, decided from the CPU (MIDR_EL1 and
//! ID_AA64PFR0_EL1.CSV2) and from what the kernel does on every exit from a lower exception
//! level. The kernel writes them into every boot-info page (`BootInfo::smccc_workarounds`) and
//! the VMMs answer from them.
//!
//! | CPU | WA1 | WA2 | WA3 | why |
//! |---|---|---|---|---|
//! | CSV2 = 3 (FEAT_CSV2_3: `max`) | 1 | -1 | 1 | branch targets and history cannot be steered across contexts: not affected |
//! | Neoverse N1, Cortex-A710, Neoverse V1 | 1 | -1 | 0 | CSV2 ≥ 1: predictions are tagged by context (WA1 not needed); Spectre-BHB affected, mitigated by the BHB-clearing loop on every exit to EL2 (k = 24, 32, 32) |
//! | Cortex-A57, and any other part | -1 | -1 | -1 | no firmware mitigation to forward to (QEMU's PSCI is SMCCC 1.0), nothing capvisor can promise |
//!
//! WA2 is -1 everywhere: the parts above with SSBS let the guest use PSTATE.SSBS itself, and
//! capvisor has no firmware call to make the mitigation permanent on the others.
//!
//! **The WA3 answer 0 on N1, A710 and V1 is true because the kernel runs the BHB-clearing loop
//! on every exception entry from a lower EL, before its first indirect branch**: `lower_common`
//! (`el0.rs`) with the count `cpu::bhb_iterations` gives those parts (24, 32, 32). Change one
//! only with the other.

use aarch64_cpu::registers::{ID_AA64PFR0_EL1, MIDR_EL1, Readable};

/// MIDR_EL1 implementer (31:24) and part number (15:4): the fields that name a core.
const MIDR_PART: u64 = (0xff << 24) | (0xfff << 4);
/// Arm Ltd.'s cores (implementer 0x41), by part number.
const fn arm_part(part: u64) -> u64 {
    (0x41 << 24) | (part << 4)
}
const NEOVERSE_N1: u64 = arm_part(0xd0c);
const CORTEX_A710: u64 = arm_part(0xd47);
const NEOVERSE_V1: u64 = arm_part(0xd40);

/// "Not supported": the PE may be vulnerable and nothing mitigates it.
const NOT_SUPPORTED: i32 = -1;
/// "Implemented": the mitigation is needed and done (for WA1/WA3, on every exit).
const DONE: i32 = 0;
/// "Not affected": this PE does not need the mitigation.
const UNAFFECTED: i32 = 1;

/// The answers for WORKAROUND_1, _2 and _3 on the CPU whose MIDR_EL1 and ID_AA64PFR0_EL1 are
/// given (the table in the module doc).
#[must_use]
pub const fn answers(midr: u64, pfr0: u64) -> [i32; 3] {
    let csv2 = (pfr0 >> 56) & 0xf;
    if csv2 >= 3 {
        return [UNAFFECTED, NOT_SUPPORTED, UNAFFECTED];
    }
    match midr & MIDR_PART {
        NEOVERSE_N1 | CORTEX_A710 | NEOVERSE_V1 => [UNAFFECTED, NOT_SUPPORTED, DONE],
        // Cortex-A57 (CSV2 = 0: Spectre-v2 needs firmware, which QEMU has not) and parts this
        // table does not know.
        _ => [NOT_SUPPORTED; 3],
    }
}

/// This CPU's answers ([`answers`]). One CPU runs threads (the others are parked), and QEMU's
/// CPUs are all one model.
#[must_use]
pub fn smccc_workaround_answers() -> [i32; 3] {
    answers(MIDR_EL1.get(), ID_AA64PFR0_EL1.get())
}

/// Whether two answer triples are equal, in a constant.
const fn same(a: [i32; 3], b: [i32; 3]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2]
}

// The five QEMU 10.0.2 models (cortex-a57, neoverse-n1, cortex-a710, neoverse-v1, max), with
// the MIDR_EL1 and ID_AA64PFR0_EL1 they report at EL2, checked when the kernel builds.
const _: () = assert!(same(answers(0x411F_D070, 0x0100_0222), [-1, -1, -1]));
const _: () = assert!(same(
    answers(0x414F_D0C1, 0x1100_0000_1111_0112),
    [1, -1, 0]
));
const _: () = assert!(same(
    answers(0x412F_D471, 0x1201_0011_2111_0112),
    [1, -1, 0]
));
const _: () = assert!(same(
    answers(0x411F_D402, 0x1101_0001_2111_0112),
    [1, -1, 0]
));
const _: () = assert!(same(
    answers(0x000F_0510, 0x1301_0011_2111_0222),
    [1, -1, 1]
));
// An unknown part: only CSV2 = 3 says anything.
const _: () = assert!(same(
    answers(0x4100_0000, 0x0300_0000_0000_0000),
    [1, -1, 1]
));
const _: () = assert!(same(
    answers(0x4100_0000, 0x0100_0000_0000_0000),
    [-1, -1, -1]
));
