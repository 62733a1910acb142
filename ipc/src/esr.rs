//! Decoding of the Exception Syndrome Register for register dumps and fault reports.
//!
//! Encodings are from the Arm ARM (DDI 0487 L.a), D24.2.40 "ESR_EL2, Exception Syndrome Register
//! (EL2)": EC [31:26], IL [25], ISS [24:0]; for aborts the ISS of "ISS encoding for an exception
//! from a Data Abort" / "... Instruction Abort", with DFSC/IFSC [5:0].

use core::fmt;

/// The exception classes the kernel and services act on (ESR_ELx.EC).
pub mod ec {
    /// Unknown reason (an Undefined Instruction when injected into a guest).
    pub const UNKNOWN: u8 = 0x00;
    /// Trapped WFI or WFE.
    pub const WFX: u8 = 0x01;
    /// Trapped MCR or MRC access to CP15 (AArch32).
    pub const CP15_32: u8 = 0x03;
    /// Trapped MCRR or MRRC access to CP15 (AArch32).
    pub const CP15_64: u8 = 0x04;
    /// Trapped MCR or MRC access to CP14 (AArch32).
    pub const CP14_32: u8 = 0x05;
    /// Trapped LDC or STC access to CP14 (AArch32).
    pub const CP14_LS: u8 = 0x06;
    /// Trapped FP/SIMD access (CPTR_EL2.TFP, CPACR_EL1.FPEN).
    pub const FP: u8 = 0x07;
    /// Trapped pointer authentication instruction (HCR_EL2.API).
    pub const PAC: u8 = 0x09;
    /// Trapped MRRC access to CP14 (AArch32).
    pub const CP14_64: u8 = 0x0c;
    /// Trapped SVE access.
    pub const SVE: u8 = 0x19;
    /// Trapped SME access.
    pub const SME: u8 = 0x1d;
    /// SError.
    pub const SERROR: u8 = 0x2f;
    /// SVC from AArch64.
    pub const SVC64: u8 = 0x15;
    /// HVC from AArch64.
    pub const HVC64: u8 = 0x16;
    /// SMC from AArch64.
    pub const SMC64: u8 = 0x17;
    /// Trapped MSR, MRS or system instruction.
    pub const SYSREG: u8 = 0x18;
    /// Instruction abort from a lower EL.
    pub const IABT_LOWER: u8 = 0x20;
    /// Instruction abort from the current EL.
    pub const IABT_SAME: u8 = 0x21;
    /// Data abort from a lower EL.
    pub const DABT_LOWER: u8 = 0x24;
    /// Data abort from the current EL.
    pub const DABT_SAME: u8 = 0x25;
}

/// The exception class, ESR_ELx.EC.
#[must_use]
pub fn class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// The instruction specific syndrome, ESR_ELx.ISS.
#[must_use]
pub fn iss(esr: u64) -> u32 {
    (esr & 0x01ff_ffff) as u32
}

/// Names an exception class.
#[must_use]
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped SVE/SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC in AArch64",
        0x16 => "HVC in AArch64",
        0x17 => "SMC in AArch64",
        0x18 => "trapped MSR/MRS/system instruction",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort from the current EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort from the current EL",
        0x26 => "SP alignment fault",
        0x2c => "trapped floating-point exception",
        0x2f => "SError interrupt",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "reserved or unhandled class",
    }
}

/// A fault status code (DFSC/IFSC) decoded into its kind and level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultStatus {
    /// What kind of fault.
    pub kind: &'static str,
    /// The lookup level, where the code carries one (-1 with FEAT_LPA2).
    pub level: Option<i8>,
}

/// Decodes a DFSC/IFSC value (ESR ISS[5:0] of an abort).
#[must_use]
pub fn fault_status(fsc: u8) -> FaultStatus {
    let level = Some((fsc & 3) as i8);
    let (kind, level) = match fsc {
        0x00..=0x03 => ("address size fault", level),
        0x04..=0x07 => ("translation fault", level),
        0x08..=0x0b => ("access flag fault", level),
        0x0c..=0x0f => ("permission fault", level),
        0x10 => ("synchronous external abort", None),
        0x11 => ("synchronous tag check fault", None),
        0x13 => ("synchronous external abort on a table walk", Some(-1)),
        0x14..=0x17 => ("synchronous external abort on a table walk", level),
        0x18 => ("synchronous parity or ECC error", None),
        0x1b => ("synchronous parity or ECC error on a table walk", Some(-1)),
        0x1c..=0x1f => ("synchronous parity or ECC error on a table walk", level),
        0x21 => ("alignment fault", None),
        0x23 => ("granule protection fault on a table walk", Some(-1)),
        0x24..=0x27 => ("granule protection fault on a table walk", level),
        0x28 => ("granule protection fault", None),
        0x29 => ("address size fault", Some(-1)),
        0x2b => ("translation fault", Some(-1)),
        0x30 => ("TLB conflict abort", None),
        0x31 => ("unsupported atomic hardware update fault", None),
        0x34 => ("IMPLEMENTATION DEFINED fault (lockdown)", None),
        0x35 => (
            "IMPLEMENTATION DEFINED fault (unsupported exclusive or atomic)",
            None,
        ),
        _ => ("reserved fault status", None),
    };
    FaultStatus { kind, level }
}

/// A human-readable decoding of one ESR value: `EC=0x25 (data abort from the current EL) IL=1
/// ISS=0x000007: DFSC=0x07 translation fault, level 3; read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded(pub u64);

impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esr = self.0;
        let ec = class(esr);
        let iss = iss(esr);
        write!(
            f,
            "EC={ec:#04x} ({}) IL={} ISS={iss:#08x}",
            class_name(ec),
            (esr >> 25) & 1
        )?;
        match ec {
            0x20 | 0x21 | 0x24 | 0x25 => write_abort(f, ec, iss),
            0x15..=0x17 => write!(f, ": imm16={:#06x}", iss & 0xffff),
            0x18 => write_sysreg(f, iss),
            _ => Ok(()),
        }
    }
}

fn write_abort(f: &mut fmt::Formatter<'_>, ec: u8, iss: u32) -> fmt::Result {
    let fsc = (iss & 0x3f) as u8;
    let status = fault_status(fsc);
    let name = if ec >= 0x24 { "DFSC" } else { "IFSC" };
    write!(f, ": {name}={fsc:#04x} {}", status.kind)?;
    if let Some(level) = status.level {
        write!(f, ", level {level}")?;
    }
    if ec >= 0x24 {
        let wnr = if iss & (1 << 6) != 0 { "write" } else { "read" };
        write!(f, "; {wnr}")?;
        if iss & (1 << 24) != 0 {
            write!(
                f,
                "; ISV=1 size={}B register=x{} sign-extend={}",
                1u32 << ((iss >> 22) & 3),
                (iss >> 16) & 0x1f,
                (iss >> 21) & 1
            )?;
        }
        if iss & (1 << 7) != 0 {
            f.write_str("; on a stage-2 walk of a stage-1 table (S1PTW)")?;
        }
        if iss & (1 << 10) != 0 {
            f.write_str("; FAR not valid (FnV)")?;
        }
    }
    Ok(())
}

fn write_sysreg(f: &mut fmt::Formatter<'_>, iss: u32) -> fmt::Result {
    // ISS for EC 0x18: Op0 [21:20], Op2 [19:17], Op1 [16:14], CRn [13:10], Rt [9:5],
    // CRm [4:1], Direction [0] (1 = read, MRS).
    write!(
        f,
        ": {} S{}_{}_C{}_C{}_{} x{}",
        if iss & 1 != 0 { "MRS" } else { "MSR" },
        (iss >> 20) & 3,
        (iss >> 14) & 7,
        (iss >> 10) & 0xf,
        (iss >> 1) & 0xf,
        (iss >> 17) & 7,
        (iss >> 5) & 0x1f
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_abort_same_el() {
        // A 64-bit load from an unmapped address at EL2: EC 0x25, IL, DFSC translation level 0.
        let esr = 0x9600_0004;
        assert_eq!(class(esr), 0x25);
        assert_eq!(
            Decoded(esr).to_string(),
            "EC=0x25 (data abort from the current EL) IL=1 ISS=0x000004: DFSC=0x04 translation fault, level 0; read"
        );
    }

    #[test]
    fn data_abort_with_syndrome() {
        // ISV, 4-byte store from w3: SAS=2, SRT=3, WnR, DFSC 0x07.
        let esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 0x07;
        let text = Decoded(esr).to_string();
        assert!(
            text.contains("translation fault, level 3; write; ISV=1 size=4B register=x3"),
            "{text}"
        );
    }

    #[test]
    fn undefined_and_sysreg() {
        assert_eq!(
            Decoded(0x0200_0000).to_string(),
            "EC=0x00 (unknown reason) IL=1 ISS=0x000000"
        );
        // MRS x2, ID_AA64MMFR2_EL1 (S3_0_C0_C7_2) trapped: Op0=3 Op2=2 Op1=0 CRn=0 Rt=2 CRm=7 read.
        let iss = (3 << 20) | (2 << 17) | (2 << 5) | (7 << 1) | 1;
        let text = Decoded((0x18 << 26) | (1 << 25) | iss).to_string();
        assert!(text.ends_with(": MRS S3_0_C0_C7_2 x2"), "{text}");
    }

    #[test]
    fn fault_levels() {
        assert_eq!(fault_status(0x2b).level, Some(-1));
        assert_eq!(
            fault_status(0x0f),
            FaultStatus {
                kind: "permission fault",
                level: Some(3)
            }
        );
        assert_eq!(fault_status(0x15).level, Some(1));
        assert_eq!(fault_status(0x10).level, None);
    }
}
