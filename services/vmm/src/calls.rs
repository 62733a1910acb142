//! The firmware calls a guest makes with `hvc` or `smc`: PSCI 1.1 (Arm DEN0022) and the Arm
//! architecture calls of the SMC Calling Convention 1.1 (Arm DEN0028), as pure functions of the
//! call and what the VMM knows of its vCPUs, tested on the host.
//!
//! Every call is read as the callee of SMCCC 1.1 must read it ("Function Identifiers" and
//! "SMC32/HVC32 argument passing"): the function ID is W0, the upper half of X0 is not part of
//! it; bit 30 of the ID says the calling convention, and an SMC32/HVC32 call passes its arguments
//! in W1–W7 only, so the upper halves of X1–X7 are ignored, whatever the guest left there. That
//! holds for every SMC32 function: `PSCI_FEATURES`, `CPU_ON` (SMC32), `AFFINITY_INFO` (SMC32),
//! `SMCCC_ARCH_FEATURES`, the workarounds.

use capvisor_ipc::bootinfo::MAX_GUEST_VCPUS as MAX_VCPUS;

/// PSCI function IDs (DEN0022 PSCI 1.1, 5.1 "Function prototypes"; SMC32 and SMC64 forms) and
/// return values.
pub mod psci {
    /// `PSCI_VERSION`.
    pub const VERSION: u32 = 0x8400_0000;
    /// `CPU_OFF`.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// `CPU_ON`, SMC32.
    pub const CPU_ON_32: u32 = 0x8400_0003;
    /// `CPU_ON`, SMC64.
    pub const CPU_ON_64: u32 = 0xC400_0003;
    /// `AFFINITY_INFO`, SMC32.
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    /// `AFFINITY_INFO`, SMC64.
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    /// `SYSTEM_OFF`.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// `SYSTEM_RESET`.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// `PSCI_FEATURES`.
    pub const FEATURES: u32 = 0x8400_000A;
    /// PSCI 1.1 (major 1 in bits 31:16, minor 1).
    pub const PSCI_1_1: u64 = 0x1_0001;
    /// `SUCCESS`.
    pub const SUCCESS: u64 = 0;
    /// `NOT_SUPPORTED` (-1).
    pub const NOT_SUPPORTED: u64 = -1i64 as u64;
    /// `INVALID_PARAMETERS` (-2).
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    /// `ALREADY_ON` (-4).
    pub const ALREADY_ON: u64 = -4i64 as u64;
    /// `AFFINITY_INFO`: at least one core of the affinity instance is on.
    pub const ON: u64 = 0;
    /// `AFFINITY_INFO`: every core of the affinity instance is off.
    pub const OFF: u64 = 1;
    /// The functions this VMM implements, which `PSCI_FEATURES` answers 0 for: PSCI's and
    /// `SMCCC_VERSION`, the one SMCCC function DEN0028 says is discovered through
    /// `PSCI_FEATURES`. (`AFFINITY_INFO` never answers `ON_PENDING`: `CPU_ON` starts the vCPU
    /// before it returns.)
    pub const IMPLEMENTED: [u32; 10] = [
        VERSION,
        CPU_OFF,
        CPU_ON_32,
        CPU_ON_64,
        AFFINITY_INFO_32,
        AFFINITY_INFO_64,
        SYSTEM_OFF,
        SYSTEM_RESET,
        FEATURES,
        super::smccc::VERSION,
    ];
}

/// The Arm architecture calls of SMCCC 1.1 (DEN0028, "Arm Architecture Calls"; the workarounds'
/// return values as DEN0070A and Trusted Firmware-A define them).
pub mod smccc {
    /// `SMCCC_VERSION`.
    pub const VERSION: u32 = 0x8000_0000;
    /// `SMCCC_ARCH_FEATURES`: mandatory from SMCCC 1.1.
    pub const ARCH_FEATURES: u32 = 0x8000_0001;
    /// `SMCCC_ARCH_WORKAROUND_1` (Spectre variant 2, CVE-2017-5715).
    pub const ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    /// `SMCCC_ARCH_WORKAROUND_2` (speculative store bypass, CVE-2018-3639).
    pub const ARCH_WORKAROUND_2: u32 = 0x8000_7FFF;
    /// `SMCCC_ARCH_WORKAROUND_3` (Spectre-BHB, CVE-2022-23960; also does what WORKAROUND_1 does).
    pub const ARCH_WORKAROUND_3: u32 = 0x8000_3FFF;
    /// SMCCC 1.1.
    pub const SMCCC_1_1: u64 = 0x1_0001;
    /// `SUCCESS`, and the workaround answer "implemented, and needed on this PE".
    pub const SUCCESS: u64 = 0;
    /// `NOT_SUPPORTED` (-1).
    pub const NOT_SUPPORTED: u64 = -1i64 as u64;
}

/// Bit 30 of a function ID: the SMC64/HVC64 calling convention (clear: SMC32/HVC32).
const SMC64: u32 = 1 << 30;
/// MPIDR_EL1's affinity fields Aff3 (39:32), Aff2 (23:16), Aff1 (15:8), Aff0 (7:0).
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// A call as the callee reads it: the function ID (W0) and x1–x3, narrowed to W1–W3 for an
/// SMC32/HVC32 function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The function ID.
    pub function: u32,
    /// x1–x3 (W1–W3, zero-extended, for an SMC32/HVC32 function).
    pub args: [u64; 3],
}

impl Call {
    /// The call a vCPU's x0–x3 make.
    #[must_use]
    pub const fn new(x: [u64; 4]) -> Self {
        let function = x[0] as u32;
        let mask = if function & SMC64 != 0 {
            u64::MAX
        } else {
            u32::MAX as u64
        };
        Self {
            function,
            args: [x[1] & mask, x[2] & mask, x[3] & mask],
        }
    }
}

/// What the VMM answers `SMCCC_ARCH_FEATURES(SMCCC_ARCH_WORKAROUND_n)` with, and so what a call
/// of each workaround does. The values come from the kernel (`BootInfo::smccc_workarounds`),
/// which knows the CPU and what it does on every exit from a lower exception level; the VMM only
/// refuses to repeat an answer it could not honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workarounds {
    wa1: i32,
    wa2: i32,
    wa3: i32,
}

impl Workarounds {
    /// Nothing is known: every workaround is "not supported" (the PE may be vulnerable).
    #[cfg(test)]
    pub const UNKNOWN: Self = Self {
        wa1: -1,
        wa2: -1,
        wa3: -1,
    };

    /// The kernel's answers for WORKAROUND_1, _2 and _3. For WORKAROUND_1 and _3: 0 (the
    /// mitigation is needed and capvisor does it on every exit, so a guest's call has nothing
    /// left to do), 1 (this PE is not affected), anything else -1. For WORKAROUND_2: -2 (not
    /// required: not affected, or mitigated for good; Linux also accepts 1 for it, which is
    /// reported as -2), anything else -1 — a 0 would promise a call that switches the
    /// mitigation on and off, which a VMM cannot do.
    #[must_use]
    pub const fn from_kernel(values: [i32; 3]) -> Self {
        const fn done_or_unaffected(value: i32) -> i32 {
            if value == 0 || value == 1 { value } else { -1 }
        }
        Self {
            wa1: done_or_unaffected(values[0]),
            wa2: if values[1] == -2 || values[1] == 1 {
                -2
            } else {
                -1
            },
            wa3: done_or_unaffected(values[2]),
        }
    }

    /// `SMCCC_ARCH_FEATURES`' answer for workaround `function`, if it is one.
    const fn answer(&self, function: u32) -> Option<i32> {
        match function {
            smccc::ARCH_WORKAROUND_1 => Some(self.wa1),
            smccc::ARCH_WORKAROUND_2 => Some(self.wa2),
            smccc::ARCH_WORKAROUND_3 => Some(self.wa3),
            _ => None,
        }
    }

    /// The result of calling workaround `function` (one of the three): `SUCCESS` (and nothing
    /// more to do: the exit that brought the call here already ran the mitigation, or the PE
    /// does not need it) where the feature query says it exists, `NOT_SUPPORTED` otherwise.
    const fn call(&self, function: u32) -> u64 {
        match self.answer(function) {
            Some(answer) if answer >= 0 || answer == -2 => smccc::SUCCESS,
            _ => smccc::NOT_SUPPORTED,
        }
    }
}

/// Which vCPUs are on, a bit per vCPU number: from a successful `CPU_ON` (or the boot of vCPU 0)
/// until `CPU_OFF`, `SYSTEM_OFF` or `SYSTEM_RESET`. A number beyond the set is never on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Online(u8);

const _: () = assert!(MAX_VCPUS <= u8::BITS as usize);

impl Online {
    /// Whether vCPU `vcpu` is on.
    #[must_use]
    pub const fn contains(self, vcpu: u32) -> bool {
        vcpu < u8::BITS && self.0 & (1 << vcpu) != 0
    }

    /// Marks vCPU `vcpu` on or off (a number beyond the set changes nothing).
    pub const fn set(&mut self, vcpu: u32, on: bool) {
        if vcpu < u8::BITS {
            if on {
                self.0 |= 1 << vcpu;
            } else {
                self.0 &= !(1 << vcpu);
            }
        }
    }
}

/// What the VMM knows when it answers a call: its guest's vCPUs, which of them are on, and the
/// workaround answers.
#[derive(Debug, Clone, Copy)]
pub struct State {
    /// The vCPUs that are on.
    pub online: Online,
    /// How many vCPUs the guest has (vCPU numbers `0..vcpus`).
    pub vcpus: u32,
    /// The workaround answers.
    pub workarounds: Workarounds,
}

/// The MPIDR_EL1 affinity of vCPU `vcpu`: Aff0 = its number, the other fields 0 (the device
/// tree's `cpu@n` and `CPU_ON`'s target name it so).
#[must_use]
pub const fn mpidr(vcpu: u32) -> u64 {
    vcpu as u64
}

/// The answer to a call that changes nothing — every function but `CPU_ON`, `CPU_OFF`,
/// `SYSTEM_OFF` and `SYSTEM_RESET`, which return `None` — made with a vCPU's x0–x3, as the value
/// of x0. It is inlined into the VMM's fault loop: `state` is asked for only by the functions
/// that need it, and only the arms that read an argument narrow it ([`Call::new`]), so a call
/// that takes none costs no more than the match.
#[must_use]
#[inline(always)]
pub fn answer(x: [u64; 4], state: impl FnOnce() -> State) -> Option<u64> {
    let function = x[0] as u32;
    Some(match function {
        psci::VERSION => psci::PSCI_1_1,
        smccc::VERSION => smccc::SMCCC_1_1,
        // An SMC32 function: its argument is W1.
        psci::FEATURES => psci_features(x[1] as u32),
        psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
            let [target, level, _] = Call::new(x).args;
            affinity_info(target, level, &state())
        }
        // An SMC32 function: its argument is W1.
        smccc::ARCH_FEATURES => arch_features(x[1] as u32, &state().workarounds),
        smccc::ARCH_WORKAROUND_1 | smccc::ARCH_WORKAROUND_2 | smccc::ARCH_WORKAROUND_3 => {
            state().workarounds.call(function)
        }
        psci::CPU_ON_32
        | psci::CPU_ON_64
        | psci::CPU_OFF
        | psci::SYSTEM_OFF
        | psci::SYSTEM_RESET => return None,
        _ => psci::NOT_SUPPORTED,
    })
}

/// `PSCI_FEATURES(function)`: 0 for the functions this VMM implements.
fn psci_features(function: u32) -> u64 {
    if psci::IMPLEMENTED.contains(&function) {
        psci::SUCCESS
    } else {
        psci::NOT_SUPPORTED
    }
}

/// `SMCCC_ARCH_FEATURES(function)` (DEN0028 1.1, "SMCCC_ARCH_FEATURES"): 0 for the two functions
/// every SMCCC 1.1 implementation has (`SMCCC_VERSION` and this one), the kernel's answer for a
/// workaround, `NOT_SUPPORTED` for anything else.
fn arch_features(function: u32, workarounds: &Workarounds) -> u64 {
    match function {
        smccc::VERSION | smccc::ARCH_FEATURES => smccc::SUCCESS,
        _ => match workarounds.answer(function) {
            Some(answer) => i64::from(answer) as u64,
            None => smccc::NOT_SUPPORTED,
        },
    }
}

/// `AFFINITY_INFO(target, level)` (DEN0022 PSCI 1.1, "AFFINITY_INFO"): whether any vCPU in the
/// affinity instance `target` names at `level` (0 a core; 1, 2, 3 the cluster-like groups whose
/// lower affinity fields are ignored) is on. A `target` with bits outside the affinity fields,
/// a level above 3 or an instance with no vCPU in it is `INVALID_PARAMETERS`.
#[must_use]
pub fn affinity_info(target: u64, level: u64, state: &State) -> u64 {
    if target & !MPIDR_AFFINITY != 0 {
        return psci::INVALID_PARAMETERS;
    }
    let mask = match level {
        0 => MPIDR_AFFINITY,
        1 => MPIDR_AFFINITY & !0xff,
        2 => MPIDR_AFFINITY & !0xffff,
        3 => MPIDR_AFFINITY & !0xff_ffff,
        _ => return psci::INVALID_PARAMETERS,
    };
    let mut found = false;
    for vcpu in (0..state.vcpus).filter(|&vcpu| mpidr(vcpu) & mask == target & mask) {
        if state.online.contains(vcpu) {
            return psci::ON;
        }
        found = true;
    }
    if found {
        psci::OFF
    } else {
        psci::INVALID_PARAMETERS
    }
}
